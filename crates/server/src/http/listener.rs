//! The HTTP listener's transport and the headers every answer carries.
//!
//! - With `--tls-cert`, connections are TLS (the certificate Flight SQL and Postgres use).
//!   Handshakes run in tasks of their own, so a slow or silent client never holds up the
//!   others, and one that does not finish within [`HANDSHAKE`] is dropped.
//! - Every answer says how a browser must treat it: a strict Content-Security-Policy (only
//!   the listener's own scripts, styles and connections; no frames), `nosniff`, no
//!   referrer, and HSTS over TLS.
//! - Requests that change something (`POST`, `DELETE`, …) from another site are refused:
//!   a browser marks them with `Sec-Fetch-Site: cross-site` or an `Origin` that is not the
//!   listener's own. Callers outside a browser (curl, functions) send neither.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, header};
use axum::middleware::Next;
use axum::response::Response;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use tarn_lake::error::Error;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Connections accepted and through their TLS handshake.
pub struct TlsListener {
    accepted: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts TLS connections on `listener` with `config`.
    ///
    /// # Errors
    /// When the listener has no local address.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (sender, accepted) = tokio::sync::mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    () = sender.closed() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            // Out of file descriptors, say: wait a little, as axum does.
                            tracing::warn!(error = %e, "accepting an HTTP connection");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = sender.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { accepted, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(connection) => connection,
            // The accepting task is gone: no connection will come again.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// The Content-Security-Policy of every answer: the console's page may load only the
/// listener's own scripts, styles and images, connect only to it, and be framed by none.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds the security headers to an answer (HSTS when `tls`).
pub(crate) async fn secure(tls: bool, request: Request<Body>, next: Next) -> Response {
    let refusal = cross_site(&request);
    let mut response = match refusal {
        Some(e) => super::query::error_response(e),
        None => next.run(request).await,
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if tls {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

/// The refusal of a request that would change something and comes from another site.
fn cross_site(request: &Request<Body>) -> Option<Error> {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return None;
    }
    let headers = request.headers();
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let refused = |why: String| {
        Some(Error::PermissionDenied(format!(
            "{why}: cross-site requests are refused; call the API from its own pages or \
             outside a browser"
        )))
    };
    match text(header::HeaderName::from_static("sec-fetch-site")) {
        Some("cross-site" | "same-site") => {
            return refused("the browser marked this request as from another site".into());
        }
        Some(_) => return None,
        None => {}
    }
    let origin = text(header::ORIGIN)?;
    let host = text(header::HOST).unwrap_or_default();
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    if origin_host.eq_ignore_ascii_case(host) {
        None
    } else {
        refused(format!("origin {origin} is not this server ({host})"))
    }
}
