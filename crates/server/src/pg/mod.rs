//! The Postgres wire protocol, so `psql`, BI tools (Grafana, Metabase, Superset) and every
//! language's Postgres driver reach Tarn: `tarn serve --pg-listen ADDR`.
//!
//! The protocol is `pgwire`'s, Arrow → Postgres encoding and `pg_catalog` are
//! `datafusion-postgres`'s (`arrow-pg`, `datafusion-pg-catalog`); the statements go through
//! the engine's lifecycle like Flight SQL's: the same catalog, rules, rollups, result
//! cache, users and roles, admission, time limit and history (front door `postgres`).
//!
//! - The Postgres database is Tarn's catalog, `tarn`; its schemas are Tarn's databases. A
//!   client connecting to a database named like one of Tarn's gets it as its default.
//! - Users log in with their Tarn password or an API token as the password (cleartext
//!   password authentication, checked against the argon2 hashes of the config). Passwords
//!   cross the network only inside TLS: the server refuses to start a password-checking
//!   listener on a non-loopback address without `--tls-cert`.
//! - `CancelRequest` stops the running statement; `statement_timeout` lowers the time
//!   limit for the session.

mod attributes;
mod catalog;
mod coerce;
mod copy;
mod encode;
mod error;
mod extended;
mod information_schema;
mod query;
mod rewrite;
mod session;
mod startup;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use datafusion_postgres::pgwire;
use pgwire::api::cancel::CancelHandler;
use pgwire::api::{ClientInfo, ErrorHandler, PgWireServerHandlers};
use pgwire::error::PgWireError;
use pgwire::messages::cancel::CancelRequest;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use session::Session;
use tarn_lake::engine::Engine;
use tarn_lake::error::{Error, Result};

/// How the Postgres listener authenticates and encrypts.
#[derive(Debug, Clone)]
pub struct PgOptions {
    pub auth: Arc<Authenticator>,
    /// PEM certificate chain and private key: accept TLS (`sslmode=require`).
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
}

/// Serves `engine` over the Postgres protocol on `listener` until `shutdown` completes.
///
/// # Errors
/// As [`PgListener::new`].
pub async fn serve(
    engine: Engine,
    listener: TcpListener,
    options: PgOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    PgListener::new(&engine, listener, options)?
        .run(shutdown)
        .await;
    Ok(())
}

/// A Postgres listener ready to serve.
pub struct PgListener {
    listener: TcpListener,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    handlers: Arc<Handlers>,
}

impl PgListener {
    /// Checks the options and prepares the engine Postgres connections run on.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unusable certificate or key, or for a listener
    /// that would take passwords in clear text over the network (authentication on, a
    /// non-loopback address, no TLS); [`Error::Internal`] when `pg_catalog` cannot be
    /// installed.
    pub fn new(engine: &Engine, listener: TcpListener, options: PgOptions) -> Result<Self> {
        let local = listener
            .local_addr()
            .map_err(|e| Error::Internal(format!("the Postgres listener's address: {e}")))?;
        if options.auth.enabled() && options.tls.is_none() && !local.ip().is_loopback() {
            return Err(Error::InvalidArgument(format!(
                "refusing to take passwords in clear text on {local}: give the Postgres \
                 listener a certificate (--tls-cert and --tls-key) or listen on a loopback \
                 address"
            )));
        }
        let tls = match &options.tls {
            Some((cert, key)) => Some(tls_acceptor(cert, key)?),
            None => None,
        };
        let door = Arc::new(Door {
            engine: catalog::postgres_engine(engine)?,
            auth: options.auth,
            sessions: Mutex::default(),
            connections: Mutex::default(),
            pids: pgwire::api::RandomPidSecretKeyGenerator::default(),
        });
        Ok(Self {
            listener,
            tls,
            handlers: Arc::new(Handlers(door)),
        })
    }

    /// Accepts connections until `shutdown` completes; each runs on a task of its own.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        loop {
            let (socket, peer) = tokio::select! {
                () = &mut shutdown => return,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "the Postgres listener could not accept a connection");
                        continue;
                    }
                },
            };
            let _ = socket.set_nodelay(true);
            let (tls, handlers) = (self.tls.clone(), Arc::clone(&self.handlers));
            let gone = CancellationToken::new();
            let watcher = watch_for_hang_up(&socket, gone.clone());
            if let Ok(mut connections) = handlers.0.connections.lock() {
                connections.insert(peer, gone.clone());
            }
            tokio::spawn(async move {
                let door = Arc::clone(&handlers.0);
                if let Err(e) = pgwire::tokio::process_socket(socket, tls, handlers).await {
                    tracing::debug!(%peer, error = %e, "Postgres connection ended with an error");
                }
                gone.cancel();
                if let Some(watcher) = watcher {
                    watcher.abort();
                }
                if let Ok(mut connections) = door.connections.lock() {
                    connections.remove(&peer);
                }
            });
        }
    }
}

/// Fires `gone` when the client closes its side of `socket` (a dropped connection), even
/// while a statement runs and nobody reads the socket, so its statement stops at once.
/// Watches a second descriptor of the socket for the peer's hang-up (epoll's RDHUP),
/// which arrives even behind unread pipelined messages.
fn watch_for_hang_up(
    socket: &tokio::net::TcpStream,
    gone: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    use std::os::fd::AsFd;
    use tokio::io::unix::AsyncFd;
    let fd = socket.as_fd().try_clone_to_owned().ok()?;
    // SAFETY: `fd` is an `OwnedFd` the `AsyncFd` owns: it stays open, on the same file
    // description, with the same number, until the `AsyncFd` is dropped.
    let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()?;
    Some(tokio::spawn(async move {
        loop {
            tokio::select! {
                () = gone.cancelled() => return,
                ready = fd.readable() => match ready {
                    Ok(guard) if guard.ready().is_read_closed() => break,
                    Ok(mut guard) => guard.clear_ready(),
                    Err(_) => break,
                },
            }
        }
        gone.cancel();
    }))
}

fn tls_acceptor(cert: &[u8], key: &[u8]) -> Result<pgwire::tokio::TlsAcceptor> {
    let config = crate::tls::server_config(cert, key, "Postgres listener")?;
    Ok(pgwire::tokio::TlsAcceptor::from(config))
}

/// A connection's process id and secret key, as a `CancelRequest` names it.
type CancelKey = (i32, Vec<u8>);

/// What every connection shares.
struct Door {
    /// The engine with `pg_catalog` in its session.
    engine: Engine,
    auth: Arc<Authenticator>,
    /// Connections by the process id and secret key they were given, for `CancelRequest`.
    sessions: Mutex<HashMap<CancelKey, Weak<Session>>>,
    /// Open connections by the client's address: fired when the client hangs up.
    connections: Mutex<HashMap<std::net::SocketAddr, CancellationToken>>,
    pids: pgwire::api::RandomPidSecretKeyGenerator,
}

/// The handlers pgwire asks for, all the one [`Door`].
struct Handlers(Arc<Door>);

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        Arc::clone(&self.0)
    }

    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        Arc::clone(&self.0)
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        Arc::clone(&self.0)
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::clone(&self.0)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.0)
    }
}

impl ErrorHandler for Door {
    fn on_error<C>(&self, client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        tracing::debug!(peer = %client.socket_addr(), %error, "Postgres error sent");
    }
}

#[async_trait]
impl CancelHandler for Door {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let key = (request.pid, request.secret_key.to_bytes().to_vec());
        let session = self
            .sessions
            .lock()
            .ok()
            .and_then(|s| s.get(&key).and_then(Weak::upgrade));
        // A request naming no connection is ignored, as Postgres does.
        if let Some(session) = session {
            session.cancel();
        }
    }
}

impl Door {
    /// The token fired when the client at `peer` hangs up.
    fn gone(&self, peer: std::net::SocketAddr) -> CancellationToken {
        self.connections
            .lock()
            .ok()
            .and_then(|c| c.get(&peer).cloned())
            .unwrap_or_default()
    }
}

/// The session of a connection that finished its startup.
fn session_of<C: ClientInfo>(client: &C) -> pgwire::error::PgWireResult<Arc<Session>> {
    client.session_extensions().get::<Session>().ok_or_else(|| {
        error::pg_error(&Error::Internal(
            "a statement arrived before the connection's startup finished".into(),
        ))
    })
}

/// The client's address as `system.sessions` shows it.
fn address_of<C: ClientInfo>(client: &C) -> String {
    client.socket_addr().to_string()
}
