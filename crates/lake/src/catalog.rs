//! The durable catalog, from the `tarn-catalog` crate (`catalog/`), under the path the
//! rest of Tarn names it by.

pub use tarn_catalog::*;

/// How often a writer merges its columns again onto a table's new schema when other
/// writers keep changing it ([`Error::SchemaMoved`]) before it gives up with a conflict.
pub const SCHEMA_ATTEMPTS: usize = 8;
