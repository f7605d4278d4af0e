//! Tarn: a SQL query engine and lake catalog.
//!
//! Tarn crawls Parquet lakes (local disk or S3) into a durable catalog, answers SQL over
//! them with Apache DataFusion, and serves them over Arrow Flight SQL.
//!
//! # Layout
//! - [`admin`]: the admin gRPC API (crawls, tables, partitions, history) and its client.
//! - [`auth`]: users, roles, API tokens, signed bearer tokens and handles.
//! - [`config`]: the command line and environment (`TARN_*`) settings.
//! - [`error`]: the crate's error type and its mapping to gRPC statuses.
//! - [`storage`]: locations and the object stores behind them.
//! - [`catalog`]: the durable catalog (SQLite): databases, tables, schema versions,
//!   partitions, files and crawls.
//! - [`crawler`]: listing, table and partition discovery, footer reading, schema merging.
//! - [`engine`]: DataFusion sessions whose tables are planned from the catalog.
//! - [`flight`]: the Arrow Flight SQL service.
//! - [`ingest`]: bulk ingest of record batches into Parquet tables.
//! - [`delta`]: Delta Lake tables (log replay, time travel) through deltalake.
//! - [`demo`]: the sample lake behind `tarn demo`.

pub mod admin;
pub mod auth;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod crawler;
pub mod delta;
pub mod demo;
pub mod engine;
pub mod error;
pub mod flight;
pub mod ingest;
pub mod rollup;
pub mod storage;

pub use error::{Error, Result};
