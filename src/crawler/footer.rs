//! Reading Parquet footers with range reads: the file's schema, row count and per-column
//! statistics, without touching its data pages.

use std::cmp::Ordering;
use std::sync::Arc;

use arrow::array::make_comparator;
use arrow::array::{Array, ArrayRef};
use arrow::compute::SortOptions;

use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::util::display::array_value_to_string;
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::{parquet_column, parquet_to_arrow_schema};
use parquet::file::metadata::{
    ParquetMetaDataOptions, ParquetMetaDataReader, ParquetStatisticsPolicy,
};
use parquet::schema::types::SchemaDescriptor;

use crate::catalog::{ColumnStats, FileStats};

/// How much of a file's tail the first read fetches: most footers fit, so one request
/// usually suffices; larger footers take a second, exact one.
const TAIL_HINT: u64 = 64 * 1024;

/// The first read of a local file's tail: a read costs a system call, not a round trip,
/// so a larger footer simply takes a second one, and small reads copy less.
const LOCAL_TAIL_HINT: u64 = 16 * 1024;

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
    let meta_len = metadata_len(&tail, size)?;
    let mut schemas = SchemaCache::default();
    match metadata_in_tail(&tail, meta_len) {
        Some(bytes) => decode(bytes, meta_len, &mut schemas),
        None => {
            let bytes = store
                .get_range(path, size - 8 - meta_len..size - 8)
                .await
                .map_err(FooterError::Store)?;
            decode(&bytes, meta_len, &mut schemas)
        }
    }
}

/// A local Parquet file whose footer is to be read: where it is on disk, its listed size,
/// and its path in the store (for errors).
pub struct LocalFile {
    pub file: std::path::PathBuf,
    pub size: u64,
    pub path: Path,
}

/// Reads the footers of local files, in order, on the calling thread: positional reads
/// into one reused buffer, and one schema conversion per distinct footer schema. Meant
/// for a blocking task, so a batch of files costs one thread hand-off, not one per read.
pub fn read_local_footers(files: &[LocalFile]) -> Vec<Result<Footer, FooterError>> {
    let mut buf = Vec::new();
    let mut schemas = SchemaCache::default();
    files
        .iter()
        .map(|f| read_local_footer(f, &mut buf, &mut schemas))
        .collect()
}

fn read_local_footer(
    f: &LocalFile,
    buf: &mut Vec<u8>,
    schemas: &mut SchemaCache,
) -> Result<Footer, FooterError> {
    use std::io::{Read, Seek, SeekFrom};
    if f.size < 12 {
        return Err(FooterError::NotParquet);
    }
    let io_error = |e: std::io::Error| {
        FooterError::Store(match e.kind() {
            std::io::ErrorKind::NotFound => object_store::Error::NotFound {
                path: f.path.to_string(),
                source: Box::new(e),
            },
            std::io::ErrorKind::UnexpectedEof => object_store::Error::Generic {
                store: "LocalFileSystem",
                source: format!(
                    "{} is shorter than when it was listed (it changed during the crawl)",
                    f.file.display()
                )
                .into(),
            },
            _ => object_store::Error::Generic {
                store: "LocalFileSystem",
                source: format!("{}: {e}", f.file.display()).into(),
            },
        })
    };
    let read_at = |offset: u64, out: &mut [u8]| -> std::io::Result<()> {
        let mut file = std::fs::File::open(&f.file)?;
        file.seek(SeekFrom::Start(offset))?;
        file.read_exact(out)
    };
    let tail_len = f.size.min(LOCAL_TAIL_HINT);
    buf.resize(tail_len as usize, 0);
    read_at(f.size - tail_len, buf).map_err(io_error)?;
    let meta_len = metadata_len(buf, f.size)?;
    match metadata_in_tail(buf, meta_len) {
        Some(bytes) => decode(bytes, meta_len, schemas),
        None => {
            let mut bytes = vec![0; meta_len as usize];
            read_at(f.size - 8 - meta_len, &mut bytes).map_err(io_error)?;
            decode(&bytes, meta_len, schemas)
        }
    }
}

/// The length of the footer metadata, from the last 8 bytes of a file of `size` bytes.
fn metadata_len(tail: &[u8], size: u64) -> Result<u64, FooterError> {
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
    Ok(meta_len)
}

/// The metadata bytes, when the tail already holds them.
fn metadata_in_tail(tail: &[u8], meta_len: u64) -> Option<&[u8]> {
    let n = tail.len();
    let len = usize::try_from(meta_len).ok()?;
    (len + 8 <= n).then(|| &tail[n - 8 - len..n - 8])
}

/// Arrow schemas of recently decoded footers. Files of one partition nearly always share
/// a schema, and converting one (with the embedded Arrow schema) costs more than decoding
/// the rest of a small footer; equal inputs give equal schemas, so each is converted once.
#[derive(Default)]
struct SchemaCache {
    recent: Vec<CachedSchema>,
}

/// Per top-level field of an Arrow schema, its Parquet leaf column (see [`leaf_columns`]).
type Leaves = Arc<[Option<usize>]>;

struct CachedSchema {
    root: parquet::schema::types::TypePtr,
    kv: Option<Vec<parquet::file::metadata::KeyValue>>,
    schema: SchemaRef,
    leaves: Leaves,
}

impl SchemaCache {
    const KEEP: usize = 4;

    /// The Arrow schema of a footer and the Parquet leaf column of each top-level field.
    fn arrow_schema(
        &mut self,
        file_meta: &parquet::file::metadata::FileMetaData,
    ) -> Result<(SchemaRef, Leaves), FooterError> {
        let root = file_meta.schema_descr().root_schema_ptr();
        let kv = file_meta.key_value_metadata();
        if let Some(c) = self
            .recent
            .iter()
            .find(|c| *c.root == *root && c.kv.as_ref() == kv)
        {
            return Ok((Arc::clone(&c.schema), Arc::clone(&c.leaves)));
        }
        let schema = Arc::new(
            parquet_to_arrow_schema(file_meta.schema_descr(), kv)
                .map_err(|e| FooterError::Corrupt(format!("schema: {e}")))?,
        );
        let leaves: Leaves = leaf_columns(file_meta.schema_descr(), &schema).into();
        if self.recent.len() == Self::KEEP {
            self.recent.remove(0);
        }
        self.recent.push(CachedSchema {
            root,
            kv: kv.cloned(),
            schema: Arc::clone(&schema),
            leaves: Arc::clone(&leaves),
        });
        Ok((schema, leaves))
    }
}

/// For each top-level field of `schema`, the Parquet leaf column holding it: `None` for
/// nested fields, which have no single column and so no statistics of their own.
fn leaf_columns(parquet_schema: &SchemaDescriptor, schema: &Schema) -> Vec<Option<usize>> {
    schema
        .fields()
        .iter()
        .map(|f| parquet_column(parquet_schema, schema, f.name()).map(|(i, _)| i))
        .collect()
}

/// Decodes footer metadata: the schema, row count and column statistics; what the catalog
/// does not keep (page encoding and size statistics) is skipped.
fn decode(bytes: &[u8], meta_len: u64, schemas: &mut SchemaCache) -> Result<Footer, FooterError> {
    let options = ParquetMetaDataOptions::new()
        .with_encoding_stats_policy(ParquetStatisticsPolicy::SkipAll)
        .with_size_stats_policy(ParquetStatisticsPolicy::SkipAll);
    let metadata = ParquetMetaDataReader::decode_metadata_with_options(bytes, Some(&options))
        .map_err(|e| FooterError::Corrupt(e.to_string()))?;
    let file_meta = metadata.file_metadata();
    let (schema, leaves) = schemas.arrow_schema(file_meta)?;
    let row_count = file_meta.num_rows().max(0) as u64;
    let stats = stats_of_leaves(&metadata, &schema, &leaves);
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

/// The per-column statistics of a file from its decoded footer and its Arrow schema: each
/// top-level column's smallest minimum and largest maximum over the row groups, and its
/// null count when every row group records one.
pub fn file_stats(
    metadata: &parquet::file::metadata::ParquetMetaData,
    schema: &SchemaRef,
) -> FileStats {
    let leaves = leaf_columns(metadata.file_metadata().schema_descr(), schema);
    stats_of_leaves(metadata, schema, &leaves)
}

/// [`file_stats`], given each field's leaf column.
fn stats_of_leaves(
    metadata: &parquet::file::metadata::ParquetMetaData,
    schema: &SchemaRef,
    leaves: &[Option<usize>],
) -> FileStats {
    let mut out = FileStats::new();
    let row_groups = metadata.row_groups();
    if row_groups.is_empty() {
        return out;
    }
    let parquet_schema = metadata.file_metadata().schema_descr();
    for (field, leaf) in schema.fields().iter().zip(leaves) {
        // Statistics are an optimisation: a column whose statistics cannot be read is
        // still catalogued, just without them.
        let Some(converter) = leaf
            .and_then(|i| StatisticsConverter::from_column_index(i, field, parquet_schema).ok())
        else {
            continue;
        };
        let null_counts = converter.row_group_null_counts(row_groups).ok();
        let (min, max) = if stats_roundtrip(field.data_type()) {
            // A row group without a bound is skipped only when it holds nothing but nulls;
            // otherwise (no statistics, or a value too long to record) the file has no
            // bound that covers all its rows.
            let all_null = |i: usize| {
                null_counts.as_ref().is_some_and(|n| {
                    n.is_valid(i) && n.value(i) == row_groups[i].num_rows().max(0) as u64
                })
            };
            let extreme = |values: parquet::errors::Result<ArrayRef>, want: Ordering| {
                let values = values.ok()?;
                if (0..values.len()).any(|i| values.is_null(i) && !all_null(i)) {
                    return None;
                }
                if values.len() == 1 {
                    // One row group (the common case): nothing to compare.
                    return values
                        .is_valid(0)
                        .then(|| array_value_to_string(&values, 0).ok())
                        .flatten();
                }
                let cmp = make_comparator(&values, &values, SortOptions::default()).ok()?;
                let best = (0..values.len())
                    .filter(|&i| values.is_valid(i))
                    .reduce(|a, b| if cmp(b, a) == want { b } else { a })?;
                array_value_to_string(&values, best).ok()
            };
            (
                extreme(converter.row_group_mins(row_groups), Ordering::Less),
                extreme(converter.row_group_maxes(row_groups), Ordering::Greater),
            )
        } else {
            (None, None)
        };
        let nulls = null_counts
            .filter(|n| n.null_count() == 0)
            .map(|n| n.values().iter().fold(0u64, |a, b| a.saturating_add(*b)));
        let entry = ColumnStats { min, max, nulls };
        if entry != ColumnStats::default() {
            out.insert(field.name().clone(), entry);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    fn write(path: &std::path::Path, batch: &RecordBatch, rows_per_group: usize) -> u64 {
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(rows_per_group))
            .build();
        let file = std::fs::File::create(path).unwrap();
        let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
        w.write(batch).unwrap();
        w.close().unwrap();
        std::fs::metadata(path).unwrap().len()
    }

    fn local(path: &std::path::Path, size: u64) -> LocalFile {
        LocalFile {
            file: path.to_path_buf(),
            size,
            path: Path::from(path.to_string_lossy().trim_start_matches('/')),
        }
    }

    fn sample(columns: usize) -> RecordBatch {
        let n = 10;
        let ids = Int64Array::from_iter_values((0..n).map(|i| (i * 37) % 11 - 5));
        let names = StringArray::from_iter(
            (0..n).map(|i| (i % 3 != 0).then(|| format!("name{}", (i * 7) % 10))),
        );
        let mut fields = vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ];
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(ids), Arc::new(names)];
        for c in 2..columns {
            fields.push(Field::new(format!("m{c}"), DataType::Float64, true));
            arrays.push(Arc::new(Float64Array::from_iter(
                (0..n).map(|i| (i != 4).then_some((i as f64 - 4.5) * c as f64)),
            )));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
    }

    #[test]
    fn statistics_span_every_row_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.parquet");
        let batch = sample(3);
        // Four row groups: the extremes lie in different ones.
        let size = write(&path, &batch, 3);
        let footer = read_local_footers(&[local(&path, size)])
            .pop()
            .unwrap()
            .unwrap();
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let names = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let id = &footer.stats["id"];
        assert_eq!(id.min, ids.iter().flatten().min().map(|v| v.to_string()));
        assert_eq!(id.max, ids.iter().flatten().max().map(|v| v.to_string()));
        assert_eq!(id.nulls, Some(0));
        let name = &footer.stats["name"];
        assert_eq!(name.min.as_deref(), names.iter().flatten().min());
        assert_eq!(name.max.as_deref(), names.iter().flatten().max());
        assert_eq!(name.nulls, Some(names.null_count() as u64));
        let m = &footer.stats["m2"];
        assert_eq!(m.min.as_deref(), Some("-9.0"));
        assert_eq!(m.max.as_deref(), Some("9.0"));
        assert_eq!(m.nulls, Some(1));
        assert_eq!(footer.row_count, 10);
    }

    #[test]
    fn row_groups_of_nulls_give_no_bound_and_take_none_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse.parquet");
        // Row groups of 3: the first two hold only nulls.
        let values = Int64Array::from_iter((0..9).map(|i| (i >= 6).then_some(100 - i)));
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)])),
            vec![Arc::new(values)],
        )
        .unwrap();
        let size = write(&path, &batch, 3);
        let footer = read_local_footers(&[local(&path, size)])
            .pop()
            .unwrap()
            .unwrap();
        let v = &footer.stats["v"];
        assert_eq!(
            (v.min.as_deref(), v.max.as_deref()),
            (Some("92"), Some("94"))
        );
        assert_eq!(v.nulls, Some(6));

        // Without statistics in its footer, a column has no bounds at all.
        let props = WriterProperties::builder()
            .set_statistics_enabled(parquet::file::properties::EnabledStatistics::None)
            .build();
        let bare = dir.path().join("bare.parquet");
        let mut w = ArrowWriter::try_new(
            std::fs::File::create(&bare).unwrap(),
            batch.schema(),
            Some(props),
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let size = std::fs::metadata(&bare).unwrap().len();
        let footer = read_local_footers(&[local(&bare, size)])
            .pop()
            .unwrap()
            .unwrap();
        let v = footer.stats.get("v").cloned().unwrap_or_default();
        assert_eq!((v.min, v.max), (None, None));
    }

    #[test]
    fn a_batch_of_local_files_reports_each_file_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let narrow = dir.path().join("narrow.parquet");
        let narrow_size = write(&narrow, &sample(3), 100);
        // Thousands of columns: a footer larger than the first read.
        let wide = dir.path().join("wide.parquet");
        let wide_size = write(&wide, &sample(3000), 100);
        let text = dir.path().join("notes.parquet");
        std::fs::write(&text, "not parquet at all, just text").unwrap();
        let missing = dir.path().join("gone.parquet");
        let footers = read_local_footers(&[
            local(&narrow, narrow_size),
            local(&wide, wide_size),
            local(&narrow, narrow_size + 100), // listed larger than it now is
            local(&text, 29),
            local(&missing, 1000),
            local(&narrow, narrow_size),
        ]);
        let schema_len =
            |r: &Result<Footer, FooterError>| r.as_ref().unwrap().schema.fields().len();
        assert_eq!(schema_len(&footers[0]), 3);
        assert!(footers[1].as_ref().unwrap().footer_size > TAIL_HINT);
        assert_eq!(schema_len(&footers[1]), 3000);
        assert!(
            matches!(&footers[2], Err(FooterError::Store(e)) if e.to_string().contains("shorter")),
            "{:?}",
            footers[2]
        );
        assert!(matches!(footers[3], Err(FooterError::NotParquet)));
        assert!(
            matches!(
                &footers[4],
                Err(FooterError::Store(object_store::Error::NotFound { .. }))
            ),
            "{:?}",
            footers[4]
        );
        // The same schema as the first file, not the wide one read in between.
        assert_eq!(schema_len(&footers[5]), 3);
        assert_eq!(
            footers[5].as_ref().unwrap().schema,
            footers[0].as_ref().unwrap().schema
        );
    }
}
