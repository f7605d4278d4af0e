//! Delta Lake tables, read through deltalake.
//!
//! A Delta table's truth is its transaction log. The crawler records the version it read,
//! with the schema and partition columns of that version; queries read exactly that version
//! through deltalake's DataFusion scan. So a query lists nothing, and the result cache and
//! the rollups key on the catalog's table version as they do for Parquet tables. A re-crawl
//! (or `MSCK REPAIR TABLE`) moves the table to the newest version in the log. Any other
//! version is read with `VERSION AS OF n` or `TIMESTAMP AS OF '…'` (see the engine's `time_travel` module).
//!
//! Tables are opened on Tarn's own object stores (the ones the crawler listed with), so
//! local, S3 and in-memory lakes work alike and deltalake needs no cloud features.

use std::sync::{Arc, Once};

use arrow::datatypes::SchemaRef;
use chrono::{DateTime, Utc};
use datafusion::datasource::TableProvider;
use deltalake::delta_datafusion::{DeltaScanConfig, DeltaScanNext};
use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig, default_logstore, logstore_factories,
};
use deltalake::{DeltaResult, DeltaTable, DeltaTableBuilder, DeltaTableError};
use object_store::ObjectStore;
use url::Url;

use crate::error::{Error, Result};

/// Which version of a Delta table to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// The newest version in the log.
    Newest,
    /// One version, by number.
    Version(u64),
    /// The newest version committed at or before this instant.
    Timestamp(DateTime<Utc>),
}

/// What a crawl records of a Delta table.
#[derive(Debug, Clone)]
pub struct Described {
    pub version: u64,
    /// The table's columns as queries see them (partition columns included).
    pub schema: SchemaRef,
    pub partition_columns: Vec<String>,
    /// Data files in this version.
    pub files: u64,
    pub bytes: u64,
}

/// Log stores for the schemes deltalake does not register itself. Tarn only reads, so the
/// default log store (no commit coordination) is the right one for any store.
struct ReadingLogStores;

impl LogStoreFactory for ReadingLogStores {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

fn register_schemes() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let registry = logstore_factories();
        for scheme in ["s3://", "gs://", "az://", "memory://", "file://"] {
            if let Ok(url) = Url::parse(scheme)
                && !registry.contains_key(&url)
            {
                registry.insert(url, Arc::new(ReadingLogStores));
            }
        }
    });
}

/// Opens the Delta table at `table_url` (a catalogued location, ending in `/`) on `store`,
/// the store for that URL's root.
///
/// # Errors
/// [`Error::InvalidArgument`] for a version or instant the log does not have, and
/// [`Error::Execution`] when the log cannot be read; both name the table's location.
pub async fn open(store: Arc<dyn ObjectStore>, table_url: &str, at: At) -> Result<DeltaTable> {
    register_schemes();
    let url = Url::parse(table_url).map_err(|e| Error::InvalidLocation {
        location: table_url.to_string(),
        reason: e.to_string(),
    })?;
    let builder = DeltaTableBuilder::from_url(url.clone())
        .map_err(|e| delta_error(table_url, e))?
        .with_storage_backend(store, url);
    let builder = match at {
        At::Newest => builder,
        At::Version(v) => builder.with_version(v),
        At::Timestamp(ts) => builder.with_timestamp(ts),
    };
    let table = builder.load().await.map_err(|e| match at {
        At::Version(v) if is_missing_version(&e, v) => Error::InvalidArgument(format!(
            "the Delta table at {table_url} has no version {v}; `SHOW HISTORY` lists the \
             versions of a Delta table"
        )),
        _ => delta_error(table_url, e),
    })?;
    // The log may hold nothing that old: deltalake then gives its first version.
    if let At::Timestamp(ts) = at
        && let Ok(state) = table.snapshot()
        && let Some(committed) = state.version_timestamp(state.version())
        && committed > ts.timestamp_millis()
    {
        return Err(Error::InvalidArgument(format!(
            "the Delta table at {table_url} has no version committed at or before {ts}; its \
             first version was committed at {}",
            DateTime::<Utc>::from_timestamp_millis(committed).unwrap_or_default()
        )));
    }
    Ok(table)
}

/// Whether opening at version `v` failed because the log has no such version (the kernel
/// says so only in its message: "… the specified end version 9").
fn is_missing_version(e: &DeltaTableError, v: u64) -> bool {
    matches!(e, DeltaTableError::InvalidVersion(_))
        || e.to_string().ends_with(&format!("version {v}"))
}

fn delta_error(table_url: &str, e: DeltaTableError) -> Error {
    Error::Execution(format!("reading the Delta log of {table_url}: {e}"))
}

/// The DataFusion provider of an opened table: the version it was opened at, with its
/// file list in memory (planning reads no log file again).
///
/// # Errors
/// [`Error::Execution`] when the table has no loaded state or uses a reader feature
/// deltalake does not support.
pub fn provider(table: &DeltaTable, table_url: &str) -> Result<Arc<dyn TableProvider>> {
    let state = table.snapshot().map_err(|e| delta_error(table_url, e))?;
    // A log may name any file (an absolute URL, or `../` out of the folder); Tarn reads
    // only files inside the table's folder, so a log cannot become a way to read files
    // outside the locations Tarn may read.
    for file in state.log_data().iter() {
        let path = file.path();
        if !is_inside(&path, table_url) {
            return Err(Error::InvalidArgument(format!(
                "the Delta table at {table_url} names a data file outside its folder \
                 ({path}); Tarn reads only files inside a table's folder"
            )));
        }
    }
    // Column types as Tarn's Parquet tables have them: partition values plain (not
    // dictionaries), strings as `Utf8`. Files are read through the store the engine
    // registered for the table's location.
    let mut config = DeltaScanConfig::new().with_wrap_partition_values(false);
    config.schema_force_view_types = false;
    config.enable_parquet_pushdown = false;
    let scan = DeltaScanNext::new(state.snapshot().clone(), config)
        .map_err(|e| Error::Execution(format!("the Delta table at {table_url}: {e}")))?;
    Ok(Arc::new(scan))
}

/// Whether a data file path from a log (relative to the table, or an absolute URL) lies
/// inside the table's folder.
fn is_inside(path: &str, table_url: &str) -> bool {
    match Url::parse(path) {
        Ok(url) if url.scheme().len() > 1 => url.as_str().starts_with(table_url),
        _ => {
            !path.starts_with('/')
                && !path.contains('\\')
                && path
                    .split('/')
                    .all(|segment| segment != ".." && segment != ".")
        }
    }
}

/// Version, columns, partition columns and size of an opened table.
///
/// # Errors
/// As [`provider`].
pub fn describe(table: &DeltaTable, table_url: &str) -> Result<Described> {
    let state = table.snapshot().map_err(|e| delta_error(table_url, e))?;
    let scan = provider(table, table_url)?;
    let log = state.log_data();
    let mut bytes = 0u64;
    for file in log.iter() {
        bytes += file.size().max(0) as u64;
    }
    Ok(Described {
        version: state.version(),
        schema: scan.schema(),
        partition_columns: state.metadata().partition_columns().to_vec(),
        files: log.num_files() as u64,
        bytes,
    })
}

/// One partition of a Delta table at the version it was opened at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// In the order of the table's partition columns.
    pub values: Vec<Option<String>>,
    pub files: i64,
    /// `None` when a file's log entry carries no row count.
    pub rows: Option<i64>,
}

/// The partition columns of an opened table and its partitions (from its active files,
/// in value order).
///
/// # Errors
/// As [`provider`].
pub fn partitions(table: &DeltaTable, table_url: &str) -> Result<(Vec<String>, Vec<Partition>)> {
    use deltalake::kernel::{ColumnMetadataKey, MetadataValue};
    let state = table.snapshot().map_err(|e| delta_error(table_url, e))?;
    let columns = state.metadata().partition_columns().to_vec();
    // With column mapping the log keys partition values by physical column names.
    let schema = state.schema();
    let physical: Vec<Option<String>> = columns
        .iter()
        .map(|c| {
            match schema
                .field(c)
                .and_then(|f| f.get_config_value(&ColumnMetadataKey::ColumnMappingPhysicalName))
            {
                Some(MetadataValue::String(name)) => Some(name.clone()),
                _ => None,
            }
        })
        .collect();
    let mut by_values: std::collections::BTreeMap<Vec<Option<String>>, (i64, Option<i64>)> =
        std::collections::BTreeMap::new();
    for file in state.log_data().iter() {
        let mut values = file.partition_values_map();
        let key = columns
            .iter()
            .zip(&physical)
            .map(|(c, p)| {
                p.as_ref()
                    .and_then(|p| values.remove(p))
                    .or_else(|| values.remove(c))
                    .flatten()
            })
            .collect();
        let entry = by_values.entry(key).or_insert((0, Some(0)));
        entry.0 += 1;
        // A file with a deletion vector has fewer rows than its log entry counts.
        let rows = file
            .num_records()
            .filter(|_| file.deletion_vector_descriptor().is_none());
        entry.1 = entry.1.zip(rows).map(|(a, n)| a.saturating_add(n as i64));
    }
    let partitions = by_values
        .into_iter()
        .map(|(values, (files, rows))| Partition {
            values,
            files,
            rows,
        })
        .collect();
    Ok((columns, partitions))
}

/// The catalog's record of a Delta table's version.
pub fn format_state(described: &Described) -> crate::catalog::FormatState {
    crate::catalog::FormatState::Delta {
        version: described.version,
        partition_columns: described.partition_columns.clone(),
        files: described.files,
        bytes: described.bytes,
    }
}

/// One commit of a Delta table's log.
#[derive(Debug, Clone)]
pub struct Commit {
    pub version: u64,
    /// RFC 3339, UTC.
    pub committed_at: String,
    /// The operation and its parameters, e.g. `DELETE {"predicate":"id = 2"}`.
    pub operation: Option<String>,
}

/// The commits of the table at `table_url`, newest first (as far back as the log keeps
/// them).
///
/// # Errors
/// As [`open`].
pub async fn history(store: Arc<dyn ObjectStore>, table_url: &str) -> Result<Vec<Commit>> {
    use futures::TryStreamExt;
    let table = open(store, table_url, At::Newest).await?;
    let newest = table.version().unwrap_or_default();
    let infos: Vec<_> = table
        .history(None)
        .try_collect()
        .await
        .map_err(|e| delta_error(table_url, e))?;
    Ok(infos
        .into_iter()
        .enumerate()
        .map(|(i, info)| Commit {
            version: newest.saturating_sub(i as u64),
            committed_at: info
                .timestamp
                .and_then(DateTime::<Utc>::from_timestamp_millis)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default(),
            operation: info.operation.map(|op| {
                // Sorted, so the text is the same on every run.
                let params = info.operation_parameters.map(|p| {
                    p.into_iter()
                        .collect::<std::collections::BTreeMap<String, serde_json::Value>>()
                });
                match params.filter(|p| !p.is_empty()) {
                    Some(params) => format!(
                        "{op} {}",
                        serde_json::to_string(&params).unwrap_or_default()
                    ),
                    None => op,
                }
            }),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_files_must_stay_inside_the_table_folder() {
        let table = "file:///lake/sales/";
        assert!(is_inside("country=de/part-0.parquet", table));
        assert!(is_inside(
            "file:///lake/sales/country=de/part-0.parquet",
            table
        ));
        assert!(!is_inside("../other/part-0.parquet", table));
        assert!(!is_inside("country=de/../../x.parquet", table));
        assert!(!is_inside("/etc/x.parquet", table));
        assert!(!is_inside("file:///srv/private/x.parquet", table));
        assert!(!is_inside("s3://other-bucket/x.parquet", table));
    }
}
