//! Tarn: a SQL query engine and lake catalog.
//!
//! Tarn crawls Parquet lakes (local disk or S3) into a durable catalog, answers SQL over
//! them with Apache DataFusion, and serves them over Arrow Flight SQL.
//!
//! # Layout
//! - [`admin`]: the admin gRPC API (crawls, tables, partitions, history) and its client.
//! - [`auth`]: users, roles, API tokens, signed bearer tokens and handles.
//! - [`config`]: the command line and environment (`TARN_*`) settings.
//! - [`context`]: what a command runs in (catalog, stores, engine) and the shutdown signal.
//! - [`output`]: results printed as a table, CSV or JSON; the server's ready line.
//! - [`error`]: the crate's error type and its mapping to gRPC statuses.
//! - [`storage`]: locations and the object stores behind them.
//! - [`catalog`]: the durable catalog (SQLite): databases, tables, schema versions,
//!   partitions, files and crawls.
//! - [`crawler`]: listing, table and partition discovery, footer reading, schema merging.
//! - [`deferred`]: replaced files deleted after a grace period, one mechanism for all.
//! - [`engine`]: DataFusion sessions whose tables are planned from the catalog.
//! - [`flight`]: the Arrow Flight SQL service.
//! - [`serve`]: the server's assembly: Flight SQL and the admin API on one listener.
//! - [`ingest`]: bulk ingest of record batches into Parquet tables.
//! - [`delta`]: Delta Lake tables (log replay, time travel) through deltalake.
//! - [`demo`]: the sample lake behind `tarn demo`.
//! - [`tls`]: the process's TLS provider, for the servers and the admin client.

pub mod admin;
pub mod auth;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod context;
pub mod crawler;
pub mod deferred;
pub mod delta;
pub mod demo;
pub mod engine;
pub mod error;
pub mod flight;
pub mod http;
pub mod ingest;
pub mod output;
pub mod rollup;
pub mod serve;
pub mod storage;
pub mod tls;

pub use error::{Error, Result};
