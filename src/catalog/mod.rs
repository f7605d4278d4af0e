//! The durable catalog: databases, tables, schema versions, partitions, files and crawls.
//!
//! [`model`] holds the records; [`store`] persists them in SQLite. One table's crawl is one
//! transaction ([`Catalog::commit_table`]), so readers see a table before or after a crawl,
//! never half of one.

pub mod model;
pub mod store;

pub use model::*;
pub use store::Catalog;
