//! The durable catalog: databases, tables, schema versions, partitions, files, crawls,
//! materialized views and the query history.
//!
//! [`model`] holds the records; [`store`] persists them in SQLite (the embedded default) or
//! PostgreSQL (a catalog several front ends share). One table's crawl is one
//! transaction ([`Catalog::commit_table`]), so readers see a table before or after a crawl,
//! never half of one. The crate knows nothing of queries, object stores or the server: the
//! engine and the crawler build on it.

pub mod error;
pub mod model;
pub mod store;

pub use error::{Error, Result};
pub use model::*;
pub use store::{Backend, Catalog, CatalogEvent, Observer};
