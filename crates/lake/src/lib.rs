//! Tarn's lake and query engine: everything between the files in a lake and an answer.
//!
//! - [`storage`]: locations and the object stores behind them (local, S3, GCS, Azure).
//! - [`catalog`]: the durable catalog (the `tarn-catalog` crate), under the path the rest
//!   of Tarn names it by.
//! - [`crawler`]: listing, table and partition discovery, footer reading, schema merging,
//!   scheduled and event-driven crawlers.
//! - [`delta`]: Delta Lake tables (log replay, time travel) through deltalake.
//! - [`ingest`]: bulk ingest of record batches into Parquet tables.
//! - [`check`]: whether a catalog and the files it references are whole (`tarn check`).
//! - [`deferred`]: replaced files deleted after a grace period, one mechanism for all.
//! - [`table`]: a catalogued table as DataFusion reads it (file list, pruning, statistics,
//!   scans), for the engine and the rollups; `probe`: what one query cost.
//! - [`engine`]: DataFusion sessions whose tables are planned from the catalog, with
//!   Tarn's planner rules (`tarn-optimizer`), the result cache, limits, admission, the
//!   query history, metrics and Tarn's SQL commands.
//! - [`rollup`]: materialized rollups: definition, refresh, and the rewrite that answers
//!   aggregations from them.
//! - [`error`]: the error type every layer above returns.

pub mod catalog;
pub mod check;
pub mod crawler;
pub mod deferred;
pub mod delta;
pub mod engine;
pub mod error;
pub mod ingest;
mod probe;
pub mod rollup;
pub mod storage;
pub mod stream;
pub mod table;

pub use error::{Error, Result};
