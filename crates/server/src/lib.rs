//! Tarn's front doors, in front of one [`tarn_lake::engine::Engine`]:
//!
//! - [`flight`]: the Arrow Flight SQL service (ADBC, JDBC, pyarrow).
//! - [`admin`]: the admin gRPC API (crawls, tables, partitions, history) and its client.
//! - [`http`]: the HTTP listener: `/metrics`, health, the query API and catalog reads.
//! - [`pg`]: the Postgres wire protocol (psql, BI tools, every language's Postgres driver).
//! - [`auth`]: users, roles, API tokens, signed bearer tokens and handles; one place turns
//!   a request into a caller.
//! - [`status`]: Tarn's errors as gRPC statuses.
//! - [`tls`]: the process's TLS provider, for the servers and the admin client.
//! - [`serve`]: the server's assembly: Flight SQL and the admin API on one listener.

pub mod admin;
pub mod auth;
pub mod flight;
pub mod http;
pub mod pg;
pub mod serve;
pub mod status;
pub mod tls;
