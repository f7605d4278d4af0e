//! Whether a catalog is whole, as after a crash, a killed process or a full disk one must
//! know before serving from it (`tarn check`): the catalog database's own checks
//! ([`crate::catalog::Catalog::check`]), then every file it references, looked up in its
//! store with the size it was recorded with.

use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use crate::catalog::Catalog;
use crate::error::Result;
use crate::storage::{Location, StoreRegistry};

/// Files looked up at once per table.
const LOOKUPS_AT_ONCE: usize = 32;

/// What [`check`] looked at and found wrong.
#[derive(Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub tables: usize,
    pub files: usize,
    /// One sentence per problem, naming the table or file; empty when all is well.
    pub problems: Vec<String>,
}

/// Checks the catalog and that every file it references exists with its recorded size.
///
/// # Errors
/// When the catalog cannot be read at all (a problem found is not an error: it is reported).
pub async fn check(catalog: &Catalog, stores: &StoreRegistry) -> Result<CheckReport> {
    let mut report = CheckReport {
        problems: catalog.check().await?,
        ..CheckReport::default()
    };
    for table in catalog.tables().await? {
        report.tables += 1;
        let name = format!("{}.{}", table.database, table.name);
        let store = match Location::parse_catalogued(&table.location)
            .and_then(|location| stores.store_for(&location))
        {
            Ok(store) => store,
            Err(e) => {
                report
                    .problems
                    .push(format!("{name}: cannot reach its location: {e}"));
                continue;
            }
        };
        let files = catalog.file_index(table.id).await?;
        report.files += files.len();
        let found: Vec<Option<String>> = futures::stream::iter(files)
            .map(|file| {
                let store = std::sync::Arc::clone(&store);
                let name = &name;
                async move {
                    match store.head(&Path::from(file.path.as_str())).await {
                        Ok(meta) if meta.size == file.size => None,
                        Ok(meta) => Some(format!(
                            "{name}: file '{}' is {} bytes, the catalog recorded {}; it changed \
                             since it was catalogued: crawl the table again",
                            file.path, meta.size, file.size
                        )),
                        Err(object_store::Error::NotFound { .. }) => Some(format!(
                            "{name}: file '{}' is catalogued but missing from the store",
                            file.path
                        )),
                        Err(e) => Some(format!("{name}: cannot look up '{}': {e}", file.path)),
                    }
                }
            })
            .buffer_unordered(LOOKUPS_AT_ONCE)
            .collect()
            .await;
        report.problems.extend(found.into_iter().flatten());
    }
    Ok(report)
}
