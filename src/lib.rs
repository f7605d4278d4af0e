//! Tarn: a SQL query engine and lake catalog.
//!
//! Tarn crawls lakes (Parquet, Delta, CSV, JSON on local disk, S3, GCS or Azure) into a
//! durable catalog, answers SQL over them with Apache DataFusion, and serves them over
//! Arrow Flight SQL and HTTP. This crate is the `tarn` program; the work is done by the
//! workspace's crates, each depending only on those below it:
//!
//! - `tarn-catalog` (`catalog/`): the durable catalog in SQLite.
//! - `tarn-optimizer` (`crates/optimizer`): Tarn's planner rules, on DataFusion alone.
//! - `tarn-lake` (`crates/lake`): stores, crawler, formats, ingest, rollups, the engine.
//! - `tarn-distributed` (`crates/distributed`): distributed plans, workers, discovery.
//! - `tarn-server` (`crates/server`): Flight SQL, the admin API, HTTP, authentication.
//!
//! Here:
//! - [`config`]: the command line and environment (`TARN_*`) settings.
//! - [`context`]: what a command runs in (catalog, stores, engine) and the shutdown signal.
//! - [`cli`]: the commands.
//! - [`cluster`]: `tarn worker` and the coordinator of `serve --workers`.
//! - [`output`]: results printed as a table, CSV or JSON; the server's ready line.
//! - [`demo`]: the sample lake behind `tarn demo`.

pub mod cli;
pub mod cluster;
pub mod config;
pub mod context;
pub mod demo;
pub mod output;

pub use tarn_lake::{Error, Result};
