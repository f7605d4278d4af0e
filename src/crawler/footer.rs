//! Reading Parquet footers with range reads: the file's schema, row count and per-column
//! statistics, without touching its data pages.

use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use arrow::util::display::array_value_to_string;
use datafusion::common::stats::Precision;
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::parquet_to_arrow_schema;
use parquet::file::metadata::ParquetMetaDataReader;

use crate::catalog::{ColumnStats, FileStats};

/// How much of a file's tail the first read fetches: most footers fit, so one request
/// usually suffices; larger footers take a second, exact one.
const TAIL_HINT: u64 = 64 * 1024;

/// What a footer tells the catalog.
#[derive(Debug, Clone)]
pub struct Footer {
    pub schema: SchemaRef,
    pub row_count: u64,
    /// Footer length plus the 8-byte trailer: the reader's metadata size hint.
    pub footer_size: u64,
    pub stats: FileStats,
}

/// Why a footer could not be used.
#[derive(Debug)]
pub enum FooterError {
    /// The file does not end in Parquet's magic bytes.
    NotParquet,
    /// It claims to be Parquet but its footer is unreadable.
    Corrupt(String),
    /// The store failed (the file may have been deleted since the listing).
    Store(object_store::Error),
}

impl std::fmt::Display for FooterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FooterError::NotParquet => f.write_str("not a Parquet file (no PAR1 magic at its end)"),
            FooterError::Corrupt(m) => write!(f, "corrupt Parquet footer: {m}"),
            FooterError::Store(e) => write!(f, "could not read: {e}"),
        }
    }
}

/// Reads and decodes the footer of the Parquet file at `path` (of `size` bytes).
pub async fn read_footer(
    store: &dyn ObjectStore,
    path: &Path,
    size: u64,
) -> Result<Footer, FooterError> {
    if size < 12 {
        return Err(FooterError::NotParquet);
    }
    let tail_len = size.min(TAIL_HINT);
    let tail = store
        .get_range(path, size - tail_len..size)
        .await
        .map_err(FooterError::Store)?;
    let n = tail.len();
    if n < 8 {
        return Err(FooterError::Corrupt("short read of the file's tail".into()));
    }
    match &tail[n - 4..] {
        b"PAR1" => {}
        b"PARE" => {
            return Err(FooterError::Corrupt(
                "the footer is encrypted, which Tarn does not read yet".into(),
            ));
        }
        _ => return Err(FooterError::NotParquet),
    }
    let meta_len = u32::from_le_bytes([tail[n - 8], tail[n - 7], tail[n - 6], tail[n - 5]]) as u64;
    if meta_len + 12 > size {
        return Err(FooterError::Corrupt(format!(
            "footer length {meta_len} does not fit a file of {size} bytes (truncated file?)"
        )));
    }
    let metadata_bytes = if meta_len + 8 <= tail_len {
        let start = (tail_len - 8 - meta_len) as usize;
        tail.slice(start..n - 8)
    } else {
        store
            .get_range(path, size - 8 - meta_len..size - 8)
            .await
            .map_err(FooterError::Store)?
    };
    let metadata = ParquetMetaDataReader::decode_metadata(&metadata_bytes)
        .map_err(|e| FooterError::Corrupt(e.to_string()))?;
    let file_meta = metadata.file_metadata();
    let schema = Arc::new(
        parquet_to_arrow_schema(file_meta.schema_descr(), file_meta.key_value_metadata())
            .map_err(|e| FooterError::Corrupt(format!("schema: {e}")))?,
    );
    let row_count = file_meta.num_rows().max(0) as u64;
    let stats = file_stats(&metadata, &schema);
    Ok(Footer {
        schema,
        row_count,
        footer_size: meta_len + 8,
        stats,
    })
}

/// Types whose min/max round-trip through their display string with a cast.
fn stats_roundtrip(t: &DataType) -> bool {
    t.is_integer()
        || t.is_floating()
        || matches!(
            t,
            DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Date32
                | DataType::Date64
                | DataType::Timestamp(..)
                | DataType::Boolean
                | DataType::Decimal128(..)
        )
}

/// The per-column statistics of a file from its decoded footer.
pub fn file_stats(
    metadata: &parquet::file::metadata::ParquetMetaData,
    schema: &SchemaRef,
) -> FileStats {
    let mut out = FileStats::new();
    // Statistics are an optimisation: a file whose statistics cannot be read is still
    // catalogued, just without them.
    let Ok(stats) = DFParquetMetadata::statistics_from_parquet_metadata(metadata, schema) else {
        return out;
    };
    for (field, col) in schema.fields().iter().zip(stats.column_statistics.iter()) {
        let show = |p: &Precision<datafusion::common::ScalarValue>| -> Option<String> {
            if !stats_roundtrip(field.data_type()) {
                return None;
            }
            let v = p.get_value()?;
            if v.is_null() {
                return None;
            }
            let arr = v.to_array().ok()?;
            array_value_to_string(&arr, 0).ok()
        };
        let entry = ColumnStats {
            min: show(&col.min_value),
            max: show(&col.max_value),
            nulls: col.null_count.get_value().map(|n| *n as u64),
        };
        if entry != ColumnStats::default() {
            out.insert(field.name().clone(), entry);
        }
    }
    out
}
