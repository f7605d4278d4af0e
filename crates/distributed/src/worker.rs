//! The worker: datafusion-distributed's worker service, building for each task a session
//! with Tarn's functions, codec and settings, over the lake's object stores.

use std::sync::Arc;

use datafusion::error::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion_distributed::{DistributedExt, Worker, WorkerQueryContext};
use tarn_optimizer::{TarnCodec, TarnOptions};

use crate::channels::{TokenChannels, TokenCheck};

/// A session with the functions every Tarn worker knows by name (DataFusion's and
/// Tarn's): what a task's plan may call.
///
/// # Errors
/// When a function cannot be registered (a name given twice).
pub fn function_registry() -> Result<SessionState> {
    let mut state = SessionStateBuilder::new().with_default_features().build();
    register(&mut state)?;
    Ok(state)
}

/// Registers what a task's plan may call by name: Tarn's functions and the worker's copies
/// of the functions Tarn's planner makes.
fn register(state: &mut SessionState) -> Result<()> {
    tarn_functions::register(state)?;
    for function in tarn_optimizer::codec::worker_functions() {
        state.register_udf(Arc::new(function))?;
    }
    Ok(())
}

/// The worker service's routes for a tonic server: tasks run over `runtime` (its memory
/// pool, spill directory and object stores), calls need `token` where one is set.
pub fn routes(runtime: Arc<RuntimeEnv>, token: Option<String>) -> tonic::service::Routes {
    let channels = TokenChannels::new(token.clone());
    let build = move |ctx: WorkerQueryContext| {
        let channels = channels.clone();
        async move {
            let mut state = ctx
                .builder
                .with_distributed_option_extension_from_headers::<TarnOptions>(&ctx.headers)?
                .with_distributed_user_codec(TarnCodec)
                .with_distributed_channel_resolver(channels)
                .build();
            register(&mut state)?;
            Ok(state)
        }
    };
    let worker = Worker::from_session_builder(build)
        .with_runtime_env(runtime)
        .with_version(env!("CARGO_PKG_VERSION"));
    let service = tonic::service::interceptor::InterceptedService::new(
        worker.into_worker_server(),
        TokenCheck::new(token.as_deref()),
    );
    tonic::service::Routes::new(service)
}

/// Serves the worker on `listener` until `shutdown` completes.
///
/// # Errors
/// When the gRPC server fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    runtime: Arc<RuntimeEnv>,
    token: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::result::Result<(), String> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_routes(routes(runtime, token))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| format!("worker server failed: {e}"))
}
