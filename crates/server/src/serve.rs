//! Server assembly: the Flight SQL service and the admin API on one gRPC listener, with
//! authentication and TLS.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;

use crate::auth::{Authenticator, Signer};
use crate::flight::{MAX_MESSAGE_SIZE, TarnFlightSql, service};
use tarn_lake::engine::Engine;
use tarn_lake::error::{Error, Result};

/// How the server authenticates callers and secures connections.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub auth: Arc<Authenticator>,
    /// PEM certificate chain and private key: serve TLS instead of plaintext.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            auth: Arc::new(Authenticator::disabled(Signer::random())),
            tls: None,
        }
    }
}

/// Serves `engine` over Flight SQL on `listener` until `shutdown` completes, without
/// authentication or TLS.
///
/// # Errors
/// [`Error::Internal`] when the gRPC server fails.
pub async fn serve(
    engine: Engine,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    serve_with(engine, listener, ServeOptions::default(), shutdown).await
}

/// Serves `engine` over Flight SQL on `listener` with `options` until `shutdown` completes.
///
/// # Errors
/// [`Error::InvalidArgument`] for an unusable certificate or key; [`Error::Internal`] when
/// the gRPC server fails.
pub async fn serve_with(
    engine: Engine,
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let sql_engine = engine.clone();
    let sql = TarnFlightSql::with_auth(engine, Arc::clone(&options.auth));
    let service = FlightServiceServer::new(service::TarnFlightService::new(sql))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    // Without TCP_NODELAY small request/response pairs (prepare, bind) wait for Nagle.
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        if let Ok(stream) = &conn {
            let _ = stream.set_nodelay(true);
        }
        conn
    });
    let mut builder = tonic::transport::Server::builder();
    if let Some((cert, key)) = options.tls {
        crate::tls::use_ring_for_tls();
        let identity = tonic::transport::Identity::from_pem(cert, key);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| Error::InvalidArgument(format!("TLS certificate or key: {e}")))?;
    }
    let admin = crate::admin::AdminService::new(sql_engine).server(Arc::clone(&options.auth));
    builder
        .add_service(service)
        .add_service(admin)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Internal(format!("Flight SQL server failed: {e}")))
}

/// Binds `addr` (port 0 picks a free port) and returns the listener with its address.
///
/// # Errors
/// [`Error::InvalidArgument`] when the address cannot be bound.
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::InvalidArgument(format!("cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::InvalidArgument(format!("cannot listen on {addr}: {e}")))?;
    Ok((listener, local))
}
