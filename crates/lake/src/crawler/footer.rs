//! Reading Parquet footers with range reads: the file's schema, row count and per-column
//! statistics, without touching its data pages; and the distinct values of string columns
//! from their small dictionary pages.

use std::cmp::Ordering;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::make_comparator;
use arrow::array::{Array, ArrayRef};
use arrow::compute::SortOptions;

use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::util::display::array_value_to_string;
use bytes::{Buf, Bytes};
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::{parquet_column, parquet_to_arrow_schema};
use parquet::basic::Encoding;
use parquet::column::page::{Page, PageReader};
use parquet::file::metadata::{
    ColumnChunkMetaData, ParquetMetaDataOptions, ParquetMetaDataReader, ParquetStatisticsPolicy,
};
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::serialized_reader::SerializedPageReader;
use parquet::schema::types::SchemaDescriptor;

use crate::catalog::{ColumnStats, FileStats, combine_distinct};

/// How much of a file's tail the first read fetches: most footers fit, so one request
/// usually suffices; larger footers take a second, exact one.
const TAIL_HINT: u64 = 64 * 1024;

/// The first read of a local file's tail: a read costs a system call, not a round trip,
/// so a larger footer simply takes a second one, and small reads copy less.
const LOCAL_TAIL_HINT: u64 = 16 * 1024;

/// The largest dictionary page (header and compressed values) read to count a column's
/// distinct values. The columns whose counts steer a plan (statuses, segments, the names
/// of a few hundred things) have dictionaries of a few kilobytes; a column with a larger
/// one is left uncounted rather than read.
const MAX_DICTIONARY_PAGE: u64 = 64 * 1024;

/// The most dictionary bytes read from one file (a file of many row groups and string
/// columns counts the columns that fit, in order).
const MAX_DICTIONARY_BYTES: u64 = 1024 * 1024;

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
    let (mut footer, probes) = match metadata_in_tail(&tail, meta_len) {
        Some(bytes) => decode(bytes, meta_len, &mut schemas)?,
        None => {
            let bytes = store
                .get_range(path, size - 8 - meta_len..size - 8)
                .await
                .map_err(FooterError::Store)?;
            decode(&bytes, meta_len, &mut schemas)?
        }
    };
    let schema = Arc::clone(&footer.schema);
    fetch_and_count(store, path, &schema, &mut footer.stats, &probes).await;
    Ok(footer)
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
    let mut file = std::fs::File::open(&f.file).map_err(io_error)?;
    let mut read_at = |offset: u64, out: &mut [u8]| -> std::io::Result<()> {
        file.seek(SeekFrom::Start(offset))?;
        file.read_exact(out)
    };
    let tail_len = f.size.min(LOCAL_TAIL_HINT);
    buf.resize(tail_len as usize, 0);
    read_at(f.size - tail_len, buf).map_err(io_error)?;
    let meta_len = metadata_len(buf, f.size)?;
    let (mut footer, probes) = match metadata_in_tail(buf, meta_len) {
        Some(bytes) => decode(bytes, meta_len, schemas)?,
        None => {
            let mut bytes = vec![0; meta_len as usize];
            read_at(f.size - 8 - meta_len, &mut bytes).map_err(io_error)?;
            decode(&bytes, meta_len, schemas)?
        }
    };
    // Counts are an optimisation: a page that cannot be read leaves its column uncounted.
    let pages: Vec<Option<Bytes>> = probes
        .pages
        .iter()
        .map(|p| {
            // At most MAX_DICTIONARY_PAGE bytes (checked when the probe was made).
            let mut page = vec![0; (p.range.end - p.range.start) as usize];
            read_at(p.range.start, &mut page)
                .ok()
                .map(|()| Bytes::from(page))
        })
        .collect();
    count_distinct(&footer.schema, &mut footer.stats, &probes, pages);
    Ok(footer)
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

/// Decodes footer metadata: the schema, row count and column statistics, and the
/// dictionary pages to read to count distinct values; what the catalog does not keep
/// (size statistics) is skipped, and page encodings are kept only as the mask that tells
/// whether a chunk is wholly dictionary-encoded. A footer whose page encodings cannot be
/// decoded is decoded without them (and its strings go uncounted).
fn decode(
    bytes: &[u8],
    meta_len: u64,
    schemas: &mut SchemaCache,
) -> Result<(Footer, Probes), FooterError> {
    let options = |encodings: ParquetStatisticsPolicy| {
        ParquetMetaDataOptions::new()
            .with_encoding_stats_as_mask(true)
            .with_encoding_stats_policy(encodings)
            .with_size_stats_policy(ParquetStatisticsPolicy::SkipAll)
    };
    let metadata = ParquetMetaDataReader::decode_metadata_with_options(
        bytes,
        Some(&options(ParquetStatisticsPolicy::KeepAll)),
    )
    .or_else(|_| {
        ParquetMetaDataReader::decode_metadata_with_options(
            bytes,
            Some(&options(ParquetStatisticsPolicy::SkipAll)),
        )
    })
    .map_err(|e| FooterError::Corrupt(e.to_string()))?;
    let file_meta = metadata.file_metadata();
    let (schema, leaves) = schemas.arrow_schema(file_meta)?;
    let row_count = file_meta.num_rows().max(0) as u64;
    let stats = stats_of_leaves(&metadata, &schema, &leaves);
    let probes = dictionary_probes(&metadata, &schema, &leaves);
    let footer = Footer {
        schema,
        row_count,
        footer_size: meta_len + 8,
        stats,
    };
    Ok((footer, probes))
}

/// Counts the distinct values of the string columns of a Parquet file Tarn has just
/// written (its `metadata` as the writer returned it) into `stats`, reading its dictionary
/// pages from `store`, as the crawler does for the files it reads.
pub async fn count_written_dictionaries(
    store: &dyn ObjectStore,
    path: &Path,
    metadata: &parquet::file::metadata::ParquetMetaData,
    schema: &SchemaRef,
    stats: &mut FileStats,
) {
    let leaves = leaf_columns(metadata.file_metadata().schema_descr(), schema);
    let probes = dictionary_probes(metadata, schema, &leaves);
    fetch_and_count(store, path, schema, stats, &probes).await;
}

/// Reads `probes`' pages from `store` and records the counts in `stats`.
async fn fetch_and_count(
    store: &dyn ObjectStore,
    path: &Path,
    schema: &SchemaRef,
    stats: &mut FileStats,
    probes: &Probes,
) {
    let ranges: Vec<Range<u64>> = probes.pages.iter().map(|p| p.range.clone()).collect();
    let pages = if ranges.is_empty() {
        Vec::new()
    } else {
        // Counts are an optimisation: a failed read leaves the columns uncounted.
        match store.get_ranges(path, &ranges).await {
            Ok(pages) => pages.into_iter().map(Some).collect(),
            Err(e) => {
                tracing::debug!(%path, error = %e, "dictionary pages not read");
                vec![None; ranges.len()]
            }
        }
    };
    count_distinct(schema, stats, probes, pages);
}

/// The dictionary pages of a file to read, and the columns counted with none to read.
#[derive(Default)]
struct Probes {
    pages: Vec<DictionaryProbe>,
    /// Columns (indexes among the schema's top-level fields) that qualify but hold no
    /// value in this file (nulls or no rows): zero distinct values.
    empty: Vec<usize>,
}

/// A column chunk's dictionary page, to be read for the number of distinct values the
/// chunk holds.
struct DictionaryProbe {
    /// The column's index among the schema's top-level fields.
    field: usize,
    /// The chunk's non-null values.
    values: u64,
    /// The chunk's metadata narrowed to its dictionary page, read as uncompressed: only
    /// the page's header is needed, and it is never decompressed.
    chunk: ColumnChunkMetaData,
    /// The page's bytes in the file: from the dictionary page to the first data page.
    range: Range<u64>,
}

/// Whether a column's distinct values are counted: strings and binaries. Whole numbers
/// and dates count themselves by their range; other types are not join keys or equality
/// filters often enough to need a count. (A column written from an Arrow dictionary, e.g.
/// a pandas categorical, counts its categories, used or not: its domain.)
fn counts_distinct(t: &DataType) -> bool {
    match t {
        DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView => true,
        DataType::Dictionary(_, value) => counts_distinct(value),
        _ => false,
    }
}

/// Whether every data page of a chunk is dictionary-encoded, from its page encoding
/// statistics (as a mask when read from a footer, in full when a writer returned them);
/// `false` when the writer recorded none.
fn dictionary_only(chunk: &ColumnChunkMetaData) -> bool {
    let is_dictionary =
        |e: Encoding| matches!(e, Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY);
    if let Some(mask) = chunk.page_encoding_stats_mask() {
        return mask.is_only(Encoding::RLE_DICTIONARY) || mask.is_only(Encoding::PLAIN_DICTIONARY);
    }
    chunk.page_encoding_stats().is_some_and(|stats| {
        let mut data = stats.iter().filter(|s| {
            matches!(
                s.page_type,
                parquet::basic::PageType::DATA_PAGE | parquet::basic::PageType::DATA_PAGE_V2
            )
        });
        data.clone().next().is_some() && data.all(|s| is_dictionary(s.encoding))
    })
}

/// The dictionary pages that count the distinct values of each string column whose
/// every row group holds it wholly dictionary-encoded, with a dictionary page of at most
/// [`MAX_DICTIONARY_PAGE`] bytes, up to [`MAX_DICTIONARY_BYTES`] for the whole file. A
/// chunk that fell back to plain encoding (its dictionary grew too large) holds values its
/// dictionary does not, so its column is not counted; neither is one whose writer recorded
/// no page encodings.
fn dictionary_probes(
    metadata: &parquet::file::metadata::ParquetMetaData,
    schema: &SchemaRef,
    leaves: &[Option<usize>],
) -> Probes {
    let mut probes = Probes::default();
    let mut budget = MAX_DICTIONARY_BYTES;
    for (field_index, (field, leaf)) in schema.fields().iter().zip(leaves).enumerate() {
        let Some(leaf) = *leaf else { continue };
        if !counts_distinct(field.data_type()) {
            continue;
        }
        let mut column = Vec::with_capacity(metadata.num_row_groups());
        let mut bytes = 0;
        let counted = metadata.row_groups().iter().all(|rg| {
            let Some(chunk) = rg.columns().get(leaf) else {
                return false;
            };
            let rows = rg.num_rows().max(0) as u64;
            let nulls = chunk.statistics().and_then(|s| s.null_count_opt());
            let values = rows.saturating_sub(nulls.unwrap_or(0));
            if rows == 0 || (nulls.is_some() && values == 0) {
                // Holds no value: nothing to count.
                return true;
            }
            let (Some(start), Ok(end)) = (
                chunk
                    .dictionary_page_offset()
                    .and_then(|o| u64::try_from(o).ok()),
                u64::try_from(chunk.data_page_offset()),
            ) else {
                return false;
            };
            if !dictionary_only(chunk)
                || start == 0
                || end <= start
                || end - start > MAX_DICTIONARY_PAGE
                || chunk.compressed_size() < (end - start) as i64
            {
                return false;
            }
            // Bounded by MAX_DICTIONARY_PAGE, so the size fits an i64.
            let narrowed = chunk
                .clone()
                .into_builder()
                .set_total_compressed_size((end - start) as i64)
                .set_compression(parquet::basic::Compression::UNCOMPRESSED)
                .build();
            let Ok(narrowed) = narrowed else {
                return false;
            };
            bytes += end - start;
            column.push(DictionaryProbe {
                field: field_index,
                values,
                chunk: narrowed,
                range: start..end,
            });
            true
        });
        if !counted || bytes > budget {
            continue;
        }
        budget -= bytes;
        if column.is_empty() {
            probes.empty.push(field_index);
        }
        probes.pages.extend(column);
    }
    probes
}

/// Records in `stats` the distinct values of each column of `schema` all of whose
/// probes' pages (`pages`, in the probes' order; `None` when a read failed) could be read.
fn count_distinct(
    schema: &SchemaRef,
    stats: &mut FileStats,
    probes: &Probes,
    pages: impl IntoIterator<Item = Option<Bytes>>,
) {
    let mut counts: Vec<Option<Vec<(u64, u64)>>> = vec![None; schema.fields().len()];
    for &field in &probes.empty {
        if let Some(slot) = counts.get_mut(field) {
            *slot = Some(Vec::new());
        }
    }
    let mut failed = vec![false; schema.fields().len()];
    for (probe, page) in probes.pages.iter().zip(pages) {
        let (Some(slot), Some(failed)) = (counts.get_mut(probe.field), failed.get_mut(probe.field))
        else {
            continue;
        };
        match page.and_then(|p| dictionary_values(probe, p)) {
            Some(values) => slot
                .get_or_insert_with(Vec::new)
                .push((values, probe.values)),
            None => *failed = true,
        }
    }
    for ((field, parts), failed) in schema.fields().iter().zip(counts).zip(failed) {
        let Some(parts) = parts.filter(|_| !failed) else {
            continue;
        };
        stats.entry(field.name().clone()).or_default().distinct = Some(combine_distinct(parts));
    }
}

/// The number of values in a probe's dictionary page (`page`, its bytes), read with the
/// Parquet crate's page reader; `None` when the bytes do not hold a dictionary page.
fn dictionary_values(probe: &DictionaryProbe, page: Bytes) -> Option<u64> {
    let window = Arc::new(PageWindow {
        start: probe.range.start,
        bytes: page,
    });
    let mut reader =
        SerializedPageReader::new(window, &probe.chunk, probe.values as usize, None).ok()?;
    match reader.get_next_page().ok()?? {
        Page::DictionaryPage { num_values, .. } => Some(u64::from(num_values)),
        _ => None,
    }
}

/// Bytes read from a file at `start`, read as the file itself by the page reader; reads
/// outside them fail.
struct PageWindow {
    start: u64,
    bytes: Bytes,
}

impl PageWindow {
    fn slice(&self, start: u64, len: usize) -> parquet::errors::Result<Bytes> {
        let from = start
            .checked_sub(self.start)
            .and_then(|o| usize::try_from(o).ok())
            .filter(|&o| {
                o.checked_add(len)
                    .is_some_and(|end| end <= self.bytes.len())
            });
        match from {
            Some(from) => Ok(self.bytes.slice(from..from + len)),
            None => Err(parquet::errors::ParquetError::EOF(format!(
                "{len} bytes at {start} lie outside the dictionary page read"
            ))),
        }
    }
}

impl Length for PageWindow {
    fn len(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }
}

impl ChunkReader for PageWindow {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        let rest = self.len().saturating_sub(start) as usize;
        Ok(self.slice(start, rest)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.slice(start, length)
    }
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
        let entry = ColumnStats {
            min,
            max,
            nulls,
            distinct: None,
        };
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

    /// A file of `rows` rows in row groups of `per_group`: `status` cycles through three
    /// values, `code` is unique per row, `note` too but in values of 400 bytes, `gap` is
    /// null in the first row group, `none` always, and `id` is a number.
    fn write_strings(
        path: &std::path::Path,
        rows: usize,
        per_group: usize,
        props: WriterProperties,
    ) -> u64 {
        let status = StringArray::from_iter_values((0..rows).map(|i| ["F", "O", "P"][i % 3]));
        let code = StringArray::from_iter_values((0..rows).map(|i| format!("code-{i}")));
        // Pseudo-random hex, so compression cannot shrink a group's dictionary below the
        // limit.
        let note = StringArray::from_iter_values((0..rows as u64).map(|i| {
            let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            (0..25)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    format!("{x:016x}")
                })
                .collect::<String>()
        }));
        let gap = StringArray::from_iter(
            (0..rows).map(|i| (i >= per_group).then(|| format!("g{}", i % 4))),
        );
        let none = StringArray::from_iter((0..rows).map(|_| None::<String>));
        let id = Int64Array::from_iter_values((0..rows as i64).map(|i| i % 7));
        let batch = RecordBatch::try_from_iter([
            ("status", Arc::new(status) as ArrayRef),
            ("code", Arc::new(code) as ArrayRef),
            ("note", Arc::new(note) as ArrayRef),
            ("gap", Arc::new(gap) as ArrayRef),
            ("none", Arc::new(none) as ArrayRef),
            ("id", Arc::new(id) as ArrayRef),
        ])
        .unwrap();
        let props = props
            .into_builder()
            .set_max_row_group_row_count(Some(per_group))
            .build();
        let mut w = ArrowWriter::try_new(
            std::fs::File::create(path).unwrap(),
            batch.schema(),
            Some(props),
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        std::fs::metadata(path).unwrap().len()
    }

    #[tokio::test]
    async fn dictionary_pages_count_distinct_strings_locally_and_in_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.parquet");
        // Compressed pages: the count is read from the page header alone.
        let props = WriterProperties::builder()
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .build();
        let size = write_strings(&path, 3_000, 1_000, props);
        let local_footer = read_local_footers(&[local(&path, size)])
            .pop()
            .unwrap()
            .unwrap();
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let stored = read_footer(&store, &Path::from("s.parquet"), size)
            .await
            .unwrap();
        for footer in [&local_footer, &stored] {
            let distinct = |c: &str| footer.stats.get(c).and_then(|s| s.distinct);
            // The same three values in each of three row groups.
            assert_eq!(distinct("status"), Some(3));
            // A thousand unique values per row group, none shared: all 3,000.
            assert_eq!(distinct("code"), Some(3_000));
            // Dictionaries of 400 kB: too large to read, so not counted.
            assert_eq!(distinct("note"), None);
            // A row group of nulls holds nothing to count; a column of nulls holds none.
            assert_eq!(distinct("gap"), Some(4));
            assert_eq!(distinct("none"), Some(0));
            // Numbers count themselves by their range.
            assert_eq!(distinct("id"), None);
            assert!(footer.stats["id"].min.is_some());
        }
    }

    #[test]
    fn columns_not_wholly_dictionary_encoded_are_not_counted() {
        let dir = tempfile::tempdir().unwrap();
        // Without dictionaries.
        let plain = dir.path().join("plain.parquet");
        let props = WriterProperties::builder()
            .set_dictionary_enabled(false)
            .build();
        let size = write_strings(&plain, 300, 100, props);
        let footer = read_local_footers(&[local(&plain, size)])
            .pop()
            .unwrap()
            .unwrap();
        // (Only the column of nulls: it holds no value, however it is encoded.)
        assert!(
            footer
                .stats
                .iter()
                .all(|(name, s)| s.distinct == (name == "none").then_some(0)),
            "{:?}",
            footer.stats
        );
        // A dictionary that overflows falls back to plain pages: its count would be short.
        let overflow = dir.path().join("overflow.parquet");
        let props = WriterProperties::builder()
            .set_dictionary_page_size_limit(1_000)
            .set_data_page_row_count_limit(100)
            .set_write_batch_size(100)
            .build();
        let size = write_strings(&overflow, 3_000, 3_000, props);
        let footer = read_local_footers(&[local(&overflow, size)])
            .pop()
            .unwrap()
            .unwrap();
        assert_eq!(footer.stats["status"].distinct, Some(3));
        assert_eq!(footer.stats["code"].distinct, None);
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
