//! The HTTP listener (`--http-listen`): operations for a load balancer, Kubernetes or a
//! monitoring system, and SQL for functions and scripts.
//!
//! - `GET /metrics`: the engine's metrics in the OpenMetrics text format.
//! - `GET /healthz`: 200 while the process serves requests.
//! - `GET /readyz`: 200 when the catalog answers and the server is not draining; 503
//!   otherwise (it turns 503 first on SIGTERM, before the listeners close).
//! - `POST /v1/query`: a statement answered in JSON, NDJSON, CSV or Arrow ([`query`]).
//! - `POST /v1/queries`, `GET`/`DELETE /v1/queries/{id}`, `GET /v1/queries/{id}/results`:
//!   Athena-style asynchronous executions, results paged from Parquet ([`executions`]).
//! - `GET /v1/databases`, `/v1/tables/{db}`, `/v1/tables/{db}/{table}`: the catalog
//!   ([`catalog`]).
//! - `GET /`: the web console ([`console`]); `GET`/`POST /v1/session`: who is calling, and
//!   a login that answers a bearer token.
//! - `GET /v1/openapi.json`: the API's OpenAPI document, generated from these handlers
//!   ([`openapi`]).

mod catalog;
mod console;
mod executions;
mod listener;
mod openapi;
mod query;
mod streams;

pub use executions::Executions;
pub use listener::CONTENT_SECURITY_POLICY;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;

use tarn_lake::engine::Engine;

/// The largest body `POST /v1/streams/…/records` takes (a Firehose-sized batch and more).
const STREAM_BODY_BYTES: usize = 64 << 20;
use tarn_lake::error::{Error, Result};

/// Whether the server is shutting down (no longer ready for new work).
#[derive(Debug, Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    pub fn start(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct Ops {
    engine: Engine,
    draining: Draining,
}

/// What the query API needs beside the engine.
#[derive(Clone)]
pub struct QueryApi {
    /// Who may run statements (as over Flight SQL).
    pub auth: Arc<crate::auth::Authenticator>,
    /// The most rows one request may ask for (`--http-max-rows`).
    pub max_rows: usize,
    /// Asynchronous executions and their stored results (`None`: the API answers that it
    /// needs a warehouse).
    pub executions: Option<Arc<Executions>>,
}

/// The operations routes over `engine`, and the query API when `api` is given.
pub fn router(engine: Engine, draining: Draining, api: Option<QueryApi>) -> Router {
    let ops = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Ops {
            engine: engine.clone(),
            draining,
        });
    match api {
        Some(api) => ops.merge(
            Router::new()
                .route("/", get(console::page))
                .route("/console.js", get(console::script))
                .route("/console.css", get(console::style))
                .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
                .route("/v1/session", get(console::whoami).post(console::login))
                .route("/v1/crawlers", get(catalog::crawlers))
                .route("/v1/openapi.json", get(openapi::document))
                .route("/v1/query", post(query::query))
                .route("/v1/queries", post(executions::start))
                .route(
                    "/v1/queries/{id}",
                    get(executions::status).delete(executions::cancel),
                )
                .route("/v1/queries/{id}/results", get(executions::results))
                .fallback(query::no_route)
                .route("/v1/databases", get(catalog::databases))
                .route("/v1/tables/{db}", get(catalog::tables))
                .route("/v1/tables/{db}/{table}", get(catalog::table))
                .route(
                    "/v1/streams/{db}/{table}/records",
                    post(streams::records)
                        .layer(axum::extract::DefaultBodyLimit::max(STREAM_BODY_BYTES)),
                )
                .with_state(query::Api {
                    engine,
                    auth: api.auth,
                    max_rows: api.max_rows,
                    executions: api.executions,
                }),
        ),
        None => ops,
    }
}

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown` completes; every
/// answer carries the security headers, and cross-site changes are refused.
///
/// # Errors
/// [`Error::Internal`] when the HTTP server fails.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    use axum::serve::ListenerExt;
    let secured = tls.is_some();
    let router = router.layer(axum::middleware::from_fn(move |request, next| {
        listener::secure(secured, request, next)
    }));
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = match tls {
        None => {
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(config) => {
            let listener = listener::TlsListener::new(listener, config)
                .map_err(|e| Error::Internal(format!("HTTP listener: {e}")))?
                .tap_io(|_| {});
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown)
                .await
        }
    };
    served.map_err(|e| Error::Internal(format!("HTTP server failed: {e}")))
}

/// `GET /metrics`: the engine's metrics for Prometheus.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200,
    description = "OpenMetrics text", content_type = "application/openmetrics-text")))]
async fn metrics(State(ops): State<Ops>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ops.engine.render_metrics(),
    )
        .into_response()
}

/// `GET /healthz`: 200 while the process serves requests.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process serves", body = String)))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 when the catalog answers and the server is not draining.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready for work", body = String),
    (status = 503, description = "Draining, or the catalog does not answer", body = String)))]
async fn readyz(State(ops): State<Ops>) -> Response {
    if ops.draining.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    match ops.engine.catalog().generation().await {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("catalog unavailable: {e}\n"),
        )
            .into_response(),
    }
}
