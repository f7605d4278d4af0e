//! Scale-out commands: `tarn worker`, and the coordinator that `serve --workers` makes of
//! the engine (see `tarn-distributed`).

use std::sync::Arc;

use tarn_lake::engine::SessionExtension;
use tarn_lake::engine::limits::{available_memory, parse_size};
use tarn_lake::error::{Error, Result};
use tarn_lake::storage::StoreRegistry;

use crate::config::{ClusterArgs, WorkerArgs};

/// The coordinator's session extension when `args` names workers.
///
/// # Errors
/// [`Error::InvalidArgument`] for a malformed worker list or size.
pub async fn coordinator(args: &ClusterArgs) -> Result<Option<Arc<dyn SessionExtension>>> {
    let Some(workers) = &args.workers else {
        return Ok(None);
    };
    let source = tarn_distributed::WorkerSource::parse(workers)
        .map_err(|e| Error::InvalidArgument(format!("--workers: {e}")))?;
    let size = |flag: &str, text: &str| match text.trim() {
        "0" => Ok(0),
        text => parse_size(text, available_memory())
            .map_err(|e| Error::InvalidArgument(format!("{flag}: {e}"))),
    };
    let options = tarn_distributed::ClusterOptions {
        min_bytes: size("--distribute-min-bytes", &args.distribute_min_bytes)? as u64,
        bytes_per_partition: Some(
            size(
                "--distribute-bytes-per-partition",
                &args.distribute_bytes_per_partition,
            )?
            .max(1),
        ),
        token: args.token.cluster_token.clone(),
    };
    let list = tarn_distributed::WorkerList::watch(source).await;
    tracing::info!(workers = ?list.urls(), "coordinating distributed queries");
    Ok(Some(Arc::new(tarn_distributed::Coordinator::new(
        list, options,
    ))))
}

/// `tarn worker`: serves tasks of distributed queries until `shutdown` completes.
///
/// # Errors
/// [`Error::InvalidArgument`] for a bad setting or an address that cannot be bound.
pub async fn worker(
    data_dir: &std::path::Path,
    args: &WorkerArgs,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<()> {
    let token = args.token.cluster_token.clone();
    if token.is_none() && !args.listen.ip().is_loopback() && !args.insecure_no_auth {
        return Err(Error::InvalidArgument(format!(
            "refusing to listen on {} without a cluster token: a worker runs any plan it is \
             sent; give --cluster-token (the same on the coordinator), or pass \
             --insecure-no-auth if the network is trusted",
            args.listen
        )));
    }
    let memory =
        crate::config::memory_limit(&args.memory_limit, args.spill_dir.as_deref(), data_dir)?;
    let runtime =
        tarn_lake::engine::worker_runtime(Arc::new(StoreRegistry::default()), Some(&memory))?;
    let (listener, addr) = tarn_server::serve::bind(args.listen).await?;
    println!("Tarn worker listening on http://{addr}");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    tarn_distributed::worker::serve(listener, runtime, token, shutdown)
        .await
        .map_err(Error::Internal)
}
