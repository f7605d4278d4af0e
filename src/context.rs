//! What every command runs in: the catalog, the object stores and an engine over them,
//! opened from the command line's settings; and the shutdown signal of long-running ones.

use std::sync::Arc;

use crate::config::Cli;
use tarn_lake::catalog::Catalog;
use tarn_lake::crawler::Crawler;
use tarn_lake::engine::limits::QueryLimits;
use tarn_lake::engine::{Engine, EngineOptions};
use tarn_lake::error::{Error, Result};
use tarn_lake::storage::StoreRegistry;

/// Everything a command needs: the catalog, the stores and an engine over them.
pub struct Context {
    pub catalog: Catalog,
    pub stores: Arc<StoreRegistry>,
    pub engine: Engine,
}

impl Context {
    /// Opens the catalog (`--catalog`, or SQLite in the data directory) and builds an
    /// engine over it.
    ///
    /// # Errors
    /// When the catalog cannot be opened or a DataFusion setting is invalid.
    pub async fn open(cli: &Cli) -> Result<Self> {
        let catalog = match &cli.catalog {
            Some(url) => Catalog::connect(url).await?,
            None => Catalog::open(&cli.data_dir).await?,
        };
        let stores = Arc::new(StoreRegistry::default());
        // SQL may create tables under the data directory and the --allow-location roots.
        let mut allowed_locations = vec![cli.data_dir.to_string_lossy().into_owned()];
        allowed_locations.extend(cli.allow_locations.iter().cloned());
        let warehouse = match &cli.warehouse {
            Some(w) => w.clone(),
            None => {
                let dir = cli.data_dir.join("warehouse");
                std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                dir.to_string_lossy().into_owned()
            }
        };
        // Only a server bounds its queries and keeps results and views in memory; a
        // one-shot command (`sql`, `crawl`) runs with no pool and no caches.
        let server = cli.command.server_limits();
        let (memory, limits) = match server {
            Some(args) => {
                let (memory, limits) = args.resolve(&cli.data_dir)?;
                (Some(memory), limits)
            }
            None => (None, QueryLimits::default()),
        };
        let session_extension = match &cli.command {
            crate::config::Command::Serve(args) => {
                crate::cluster::coordinator(&args.cluster).await?
            }
            _ => None,
        };
        let options = EngineOptions {
            session_extension,
            memory,
            limits,
            history_retention: (cli.history_retention_days > 0)
                .then(|| chrono::TimeDelta::days(i64::from(cli.history_retention_days))),
            datafusion_config: cli.datafusion_config.clone(),
            allowed_locations,
            warehouse: Some(warehouse),
            rollup_rewrite: !cli.no_rollup_rewrite,
            rollup_memory: server.map_or(0, |s| s.rollup_memory_mb << 20),
            result_cache: server.map_or(0, |s| s.result_cache_mb << 20),
        };
        let engine = Engine::new(catalog.clone(), Arc::clone(&stores), &options)?;
        Ok(Self {
            catalog,
            stores,
            engine,
        })
    }

    pub fn crawler(&self) -> Crawler {
        Crawler::new(self.catalog.clone(), Arc::clone(&self.stores))
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
