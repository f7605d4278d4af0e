//! The durable catalog, from the `tarn-catalog` crate (`catalog/`), under the path the
//! rest of Tarn names it by.

pub use tarn_catalog::*;
