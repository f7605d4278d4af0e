//! A catalog table as a DataFusion [`TableProvider`]: scans are planned from the catalog's
//! file list, so a query never lists the store.
//!
//! Filters on partition columns are evaluated against the table's partition values before
//! any file is opened (and reported to DataFusion as exact); every other filter is pushed
//! into the Parquet scan for row-group and page pruning. Each file carries statistics
//! (row count, per-column min/max/nulls, strings' distinct counts) from the catalog, for
//! the planner and pruning.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, new_null_array};
use arrow::compute::and;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use chrono::NaiveDate;
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::{ColumnStatistics, DFSchema, ScalarValue, Statistics};
use datafusion::config::TableParquetOptions;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::listing::helpers::expr_applicable_for_cols;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use object_store::ObjectMeta;

use crate::catalog::{FileEntry, PartitionType, TableEntry, combine_distinct};
use crate::crawler::layout::{parse_date, parse_timestamp};
use crate::crawler::text::{Compression, FileFormat};
use datafusion::config::CsvOptions;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::physical_plan::{CsvSource, JsonSource};

/// Name of the DataFusion catalog that holds Tarn's databases.
pub const CATALOG_NAME: &str = "tarn";

/// One partition: its typed values and the indices of its files.
#[derive(Debug)]
struct Partition {
    files: Vec<usize>,
}

/// A table read from the catalog at one version.
#[derive(Debug)]
pub struct CatalogTable {
    entry: TableEntry,
    schema: SchemaRef,
    store_url: ObjectStoreUrl,
    files: Vec<PartitionedFile>,
    partitions: Vec<Partition>,
    /// One row per partition, one column per partition column (for pruning).
    partition_values: RecordBatch,
    statistics: Statistics,
    /// A table with its own log (Delta): scans go to the format's reader, which reads the
    /// version the catalog recorded.
    delegate: Option<Arc<dyn TableProvider>>,
    /// CSV or JSON files, read with these options (Parquet when `None`).
    text: Option<TextOptions>,
    /// Streamed records not in `files`: scans read them too.
    stream: Option<crate::stream::StreamView>,
}

/// How a CSV or JSON table's files are read (from its catalogued format state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextOptions {
    pub format: FileFormat,
    pub has_header: bool,
    pub delimiter: u8,
}

impl TextOptions {
    /// The options of a table of `format` with these catalogued properties; `None` for
    /// Parquet and Delta tables.
    pub fn of(
        format: crate::catalog::TableFormat,
        properties: &crate::catalog::TableProperties,
    ) -> Option<Self> {
        let format = FileFormat::of_table(format).filter(|f| *f != FileFormat::Parquet)?;
        let (has_header, delimiter) = properties.csv_dialect().unwrap_or((true, b','));
        Some(Self {
            format,
            has_header,
            delimiter,
        })
    }
}

/// Converts a raw partition value to the column's type (`None` is NULL).
pub fn partition_scalar(value: Option<&str>, data_type: PartitionType) -> ScalarValue {
    let Some(v) = value else {
        return ScalarValue::try_from(&data_type.arrow_type()).unwrap_or(ScalarValue::Null);
    };
    match data_type {
        PartitionType::Int64 => ScalarValue::Int64(v.parse().ok()),
        PartitionType::Date => ScalarValue::Date32(parse_date(v).map(|d| {
            // Days since the Unix epoch.
            (d - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days() as i32
        })),
        PartitionType::Timestamp => ScalarValue::TimestampMicrosecond(
            parse_timestamp(v).map(|t| t.and_utc().timestamp_micros()),
            None,
        ),
        PartitionType::String => ScalarValue::Utf8(Some(v.to_string())),
    }
}

fn stat_value(s: &Option<String>, data_type: &DataType) -> Precision<ScalarValue> {
    match s {
        // Min/max are inexact: Parquet may truncate string statistics.
        Some(v) => match ScalarValue::try_from_string(v.clone(), data_type) {
            Ok(value) if !value.is_null() => Precision::Inexact(value),
            _ => Precision::Absent,
        },
        None => Precision::Absent,
    }
}

fn file_statistics(
    file: &FileEntry,
    entry: &TableEntry,
    partition_values: &[ScalarValue],
) -> Statistics {
    let rows = file.row_count as usize;
    let mut columns: Vec<ColumnStatistics> = entry
        .file_schema
        .fields()
        .iter()
        .map(|field| {
            if file.file_schema.field_with_name(field.name()).is_err() {
                // Not in this file: every value is NULL.
                return ColumnStatistics {
                    null_count: Precision::Exact(rows),
                    distinct_count: Precision::Exact(0),
                    ..ColumnStatistics::new_unknown()
                };
            }
            match file.stats.get(field.name()) {
                Some(s) => ColumnStatistics {
                    // Inexact: writers without statistics make a null count look like all rows.
                    null_count: s
                        .nulls
                        .map(|n| Precision::Inexact(n as usize))
                        .unwrap_or_default(),
                    min_value: stat_value(&s.min, field.data_type()),
                    max_value: stat_value(&s.max, field.data_type()),
                    distinct_count: s
                        .distinct
                        .map(|d| Precision::Inexact(d as usize))
                        .unwrap_or_default(),
                    ..ColumnStatistics::new_unknown()
                },
                None => ColumnStatistics::new_unknown(),
            }
        })
        .collect();
    for value in partition_values {
        let null = value.is_null();
        columns.push(ColumnStatistics {
            null_count: Precision::Exact(if null { rows } else { 0 }),
            min_value: if null {
                Precision::Absent
            } else {
                Precision::Exact(value.clone())
            },
            max_value: if null {
                Precision::Absent
            } else {
                Precision::Exact(value.clone())
            },
            distinct_count: Precision::Exact(1),
            ..ColumnStatistics::new_unknown()
        });
    }
    Statistics {
        num_rows: Precision::Exact(rows),
        total_byte_size: Precision::Inexact(file.size as usize),
        column_statistics: columns,
    }
}

/// Files' statistics merged into their table's (or scan's). DataFusion's merge adds rows
/// and widens ranges, but can only take the largest of the files' distinct counts for
/// strings; here a file column's count combines the files' counts by how much their
/// values repeat (see [`combine_distinct`]), and a partition column's is the number of
/// its distinct values among files with rows. The first `file_columns` columns are the
/// files' own.
fn merge_statistics(
    files: &[&Statistics],
    schema: &Schema,
    file_columns: usize,
) -> DfResult<Statistics> {
    let mut merged = Statistics::try_merge_iter(files.iter().copied(), schema)?;
    for (i, column) in merged.column_statistics.iter_mut().enumerate() {
        column.distinct_count = if i < file_columns {
            files
                .iter()
                .map(|f| {
                    let rows = *f.num_rows.get_value()?;
                    let column = f.column_statistics.get(i)?;
                    let values = rows.saturating_sub(*column.null_count.get_value().unwrap_or(&0));
                    let distinct = *column.distinct_count.get_value()?;
                    Some((distinct as u64, values as u64))
                })
                .collect::<Option<Vec<_>>>()
                .filter(|parts| !parts.is_empty())
                .map_or(Precision::Absent, |parts| {
                    Precision::Inexact(combine_distinct(parts) as usize)
                })
        } else {
            // Inexact: a file's statistics need not be exact about its rows, and an exact
            // count would answer `count(DISTINCT …)` without reading them.
            let values: HashSet<&ScalarValue> = files
                .iter()
                .filter(|f| f.num_rows.get_value().is_some_and(|rows| *rows > 0))
                .filter_map(|f| f.column_statistics.get(i)?.min_value.get_value())
                .collect();
            Precision::Inexact(values.len())
        };
    }
    Ok(merged)
}

impl CatalogTable {
    /// Builds the provider from a table's catalog entry and file list.
    pub fn try_new(
        entry: TableEntry,
        files: Vec<FileEntry>,
        store_url: ObjectStoreUrl,
        text: Option<TextOptions>,
    ) -> crate::Result<Self> {
        let schema = entry.table_schema();
        let part_types: Vec<PartitionType> = entry
            .partition_columns
            .iter()
            .map(|c| c.data_type)
            .collect();
        let mut by_location: BTreeMap<String, (Vec<ScalarValue>, Vec<usize>)> = BTreeMap::new();
        let mut scan_files = Vec::with_capacity(files.len());
        for (i, file) in files.iter().enumerate() {
            let values: Vec<ScalarValue> = part_types
                .iter()
                .enumerate()
                .map(|(k, t)| {
                    partition_scalar(file.partition_values.get(k).and_then(|v| v.as_deref()), *t)
                })
                .collect();
            let stats = file_statistics(file, &entry, &values);
            // Stored paths are object store paths already encoded: parse, never re-encode.
            let location = object_store::path::Path::parse(&file.path).map_err(|e| {
                crate::Error::CatalogCorrupt {
                    what: format!(
                        "file '{}' of table {}.{}",
                        file.path, entry.database, entry.name
                    ),
                    reason: e.to_string(),
                }
            })?;
            let mut pf = PartitionedFile::new_from_meta(ObjectMeta {
                location,
                last_modified: file.last_modified,
                size: file.size,
                e_tag: file.e_tag.clone(),
                version: None,
            })
            .with_partition_values(values.clone());
            if let Some(hint) = file.footer_size {
                pf = pf.with_metadata_size_hint(hint as usize);
            }
            // A text file's rows and values are unknown until it is read.
            if text.is_none() {
                pf.statistics = Some(Arc::new(stats));
            }
            scan_files.push(pf);
            by_location
                .entry(file.partition_location.clone())
                .or_insert_with(|| (values, Vec::new()))
                .1
                .push(i);
        }
        let part_fields: Vec<Field> = entry
            .partition_columns
            .iter()
            .map(|c| Field::new(&c.name, c.data_type.arrow_type(), true))
            .collect();
        let part_schema = Arc::new(Schema::new(part_fields));
        let mut columns: Vec<Vec<ScalarValue>> = vec![Vec::new(); part_types.len()];
        let mut partitions = Vec::with_capacity(by_location.len());
        for (_, (values, idx)) in by_location {
            for (k, v) in values.into_iter().enumerate() {
                columns[k].push(v);
            }
            partitions.push(Partition { files: idx });
        }
        let arrays: Vec<ArrayRef> = columns
            .into_iter()
            .zip(part_schema.fields())
            .map(|(vals, field)| {
                if vals.is_empty() {
                    Ok(new_null_array(field.data_type(), 0))
                } else {
                    ScalarValue::iter_to_array(vals)
                }
            })
            .collect::<DfResult<_>>()?;
        let partition_values = if arrays.is_empty() {
            RecordBatch::new_empty(Arc::clone(&part_schema))
        } else {
            RecordBatch::try_new(Arc::clone(&part_schema), arrays)?
        };
        let per_file: Vec<&Statistics> = scan_files
            .iter()
            .filter_map(|f| f.statistics.as_deref())
            .collect();
        let statistics = merge_statistics(&per_file, &schema, entry.file_schema.fields().len())
            .unwrap_or_else(|_| Statistics::new_unknown(&schema));
        let statistics = if scan_files.is_empty() || text.is_some() {
            Statistics::new_unknown(&schema)
        } else {
            statistics
        };
        Ok(Self {
            entry,
            schema,
            store_url,
            files: scan_files,
            partitions,
            partition_values,
            statistics,
            delegate: None,
            text,
            stream: None,
        })
    }

    /// A table whose format reads itself (Delta): `provider` plans its scans; the catalog
    /// holds no file list for it.
    pub fn delegating(entry: TableEntry, provider: Arc<dyn TableProvider>) -> Self {
        let schema = provider.schema();
        let statistics = provider
            .statistics()
            .unwrap_or_else(|| Statistics::new_unknown(&schema));
        let part_schema = Arc::new(Schema::empty());
        Self {
            entry,
            schema,
            store_url: ObjectStoreUrl::local_filesystem(),
            files: Vec::new(),
            partitions: Vec::new(),
            partition_values: RecordBatch::new_empty(part_schema),
            statistics,
            delegate: Some(provider),
            text: None,
            stream: None,
        }
    }

    /// Whether scans go to a format's own reader (a Delta table).
    pub fn is_delegating(&self) -> bool {
        self.delegate.is_some()
    }

    /// The catalog entry this provider was built from.
    /// This table with the buffered records of `view` (streamed, not yet in its files).
    pub fn with_stream(mut self, view: Option<crate::stream::StreamView>) -> Self {
        self.stream = view;
        self
    }

    /// Whether scans of this table include buffered records (streamed, not yet in files).
    pub fn has_buffered_rows(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.has_rows())
    }

    pub fn entry(&self) -> &TableEntry {
        &self.entry
    }

    /// Every partition's files (their object metadata), keyed by the partition's values.
    pub fn partition_files(&self) -> HashMap<Vec<ScalarValue>, Vec<&ObjectMeta>> {
        let mut out: HashMap<Vec<ScalarValue>, Vec<&ObjectMeta>> = HashMap::new();
        for file in &self.files {
            out.entry(file.partition_values.clone())
                .or_default()
                .push(&file.object_meta);
        }
        out
    }

    /// Rows and bytes of the table's files.
    pub fn size(&self) -> (u64, u64) {
        let rows = match self.statistics.num_rows {
            Precision::Exact(n) | Precision::Inexact(n) => n as u64,
            Precision::Absent => 0,
        };
        (rows, self.files.iter().map(|f| f.object_meta.size).sum())
    }

    fn partition_names(&self) -> Vec<&str> {
        self.entry
            .partition_columns
            .iter()
            .map(|c| c.name.as_str())
            .collect()
    }

    /// The scan of a CSV or JSON table: one per compression (the codec is per scan), in
    /// one union.
    fn scan_text(
        &self,
        text: &TextOptions,
        table_schema: TableSchema,
        file_groups: Vec<FileGroup>,
        projection: Option<&Vec<usize>>,
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let mut by_codec: BTreeMap<Compression, Vec<FileGroup>> = BTreeMap::new();
        for group in file_groups {
            let mut split: BTreeMap<Compression, Vec<PartitionedFile>> = BTreeMap::new();
            for file in group.iter() {
                split
                    .entry(Compression::of(file.object_meta.location.as_ref()))
                    .or_default()
                    .push(file.clone());
            }
            for (codec, files) in split {
                by_codec
                    .entry(codec)
                    .or_default()
                    .push(FileGroup::new(files));
            }
        }
        let mut scans: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        for (codec, groups) in by_codec {
            let source: Arc<dyn datafusion::datasource::physical_plan::FileSource> =
                match text.format {
                    FileFormat::Json => Arc::new(JsonSource::new(table_schema.clone())),
                    _ => Arc::new(CsvSource::new(table_schema.clone()).with_csv_options(
                        CsvOptions {
                            has_header: Some(text.has_header),
                            delimiter: text.delimiter,
                            // Files with fewer columns (written before a column was
                            // added) read NULL for the missing ones.
                            truncated_rows: Some(true),
                            ..CsvOptions::default()
                        },
                    )),
                };
            let config = FileScanConfigBuilder::new(self.store_url.clone(), source)
                .with_file_groups(groups)
                .with_file_compression_type(match codec {
                    Compression::None => FileCompressionType::UNCOMPRESSED,
                    Compression::Gzip => FileCompressionType::GZIP,
                    Compression::Zstd => FileCompressionType::ZSTD,
                })
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
            scans.push(DataSourceExec::from_data_source(config));
        }
        match scans.len() {
            1 => Ok(scans.remove(0)),
            _ => datafusion::physical_plan::union::UnionExec::try_new(scans),
        }
    }

    /// Indices of the partitions that may satisfy all `filters` (partition-only filters).
    fn prune_partitions(&self, state: &dyn Session, filters: &[&Expr]) -> DfResult<Vec<usize>> {
        let all: Vec<usize> = (0..self.partitions.len()).collect();
        if filters.is_empty() || self.partitions.is_empty() {
            return Ok(all);
        }
        let df_schema = DFSchema::try_from(self.partition_values.schema())?;
        let mut mask: Option<BooleanArray> = None;
        for filter in filters {
            let expr = state.create_physical_expr((*filter).clone(), &df_schema)?;
            let result = expr
                .evaluate(&self.partition_values)?
                .into_array(self.partition_values.num_rows())?;
            let result = result
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(|| {
                    DataFusionError::Internal(format!("partition filter {filter} is not boolean"))
                })?
                .clone();
            mask = Some(match mask {
                Some(m) => and(&m, &result)?,
                None => result,
            });
        }
        let Some(mask) = mask else { return Ok(all) };
        // NULL (unknown) is not true: that partition cannot match.
        Ok(all
            .into_iter()
            .filter(|i| mask.is_valid(*i) && mask.value(*i))
            .collect())
    }
}

/// Whether a limit pushed into `plan` would pass through every node and reach a leaf
/// that also claims to pass it on.
fn passes_limit_to_nothing(plan: &Arc<dyn ExecutionPlan>) -> bool {
    if !plan.supports_limit_pushdown() {
        return false;
    }
    match plan.children().as_slice() {
        [] => true,
        [child] => passes_limit_to_nothing(child),
        _ => false,
    }
}

#[async_trait]
impl TableProvider for CatalogTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        if let Some(delegate) = &self.delegate {
            return delegate.supports_filters_pushdown(filters);
        }
        let names = self.partition_names();
        Ok(filters
            .iter()
            .map(|f| {
                if !names.is_empty() && expr_applicable_for_cols(&names, f) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    fn statistics(&self) -> Option<Statistics> {
        // Buffered records are not in the files' statistics: nothing is known for sure.
        if self.has_buffered_rows() {
            return Some(Statistics::new_unknown(&self.schema));
        }
        Some(self.statistics.clone())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let files = self.scan_files(state, projection, filters, limit).await?;
        let buffered = match &self.stream {
            Some(view) if state.config().get_extension::<FilesOnly>().is_none() => view.batches(),
            _ => Vec::new(),
        };
        if buffered.is_empty() {
            return Ok(files);
        }
        let buffer = self.scan_buffer(state, buffered, projection, filters)?;
        if files.downcast_ref::<EmptyExec>().is_some() {
            return Ok(buffer);
        }
        datafusion::physical_plan::union::UnionExec::try_new(vec![files, buffer])
    }
}

/// A session extension that makes catalog tables' scans read their files only, leaving
/// out streamed records still buffered (a materialized view's refresh: the view's rows
/// must match the files its freshness is judged by).
#[derive(Debug, Default)]
pub struct FilesOnly;

impl CatalogTable {
    /// A scan of buffered batches: in the table's current schema (a batch buffered before
    /// the table was widened gets NULL for the new columns), projected, with the filters
    /// on partition columns applied (they are reported exact, so nothing above applies
    /// them again).
    fn scan_buffer(
        &self,
        state: &dyn Session,
        batches: Vec<RecordBatch>,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let qualified = format!("{}.{}", self.entry.database, self.entry.name);
        let batches: Vec<RecordBatch> = batches
            .iter()
            .map(|b| {
                if b.schema() == self.schema {
                    Ok(b.clone())
                } else {
                    crate::stream::conform(b, &self.schema, &qualified, false)
                        .map_err(|e| DataFusionError::External(Box::new(e)))
                }
            })
            .collect::<DfResult<_>>()?;
        let names = self.partition_names();
        let exact: Vec<Expr> = filters
            .iter()
            .filter(|f| !names.is_empty() && expr_applicable_for_cols(&names, f))
            .cloned()
            .collect();
        // Spread over the session's partitions, so a large buffer is scanned in parallel.
        let n = state
            .config()
            .target_partitions()
            .max(1)
            .min(batches.len().max(1));
        let mut partitions: Vec<Vec<RecordBatch>> = vec![Vec::new(); n];
        for (i, batch) in batches.into_iter().enumerate() {
            partitions[i % n].push(batch);
        }
        let all = datafusion::datasource::memory::MemorySourceConfig::try_new_exec(
            &partitions,
            Arc::clone(&self.schema),
            None,
        )?;
        let mut plan: Arc<dyn ExecutionPlan> = all;
        if let Some(predicate) = datafusion::logical_expr::utils::conjunction(exact) {
            let df_schema = DFSchema::try_from(Arc::clone(&self.schema))?;
            let predicate = state.create_physical_expr(predicate, &df_schema)?;
            plan = Arc::new(datafusion::physical_plan::filter::FilterExec::try_new(
                predicate, plan,
            )?);
        }
        if let Some(p) = projection {
            let schema = plan.schema();
            let columns: Vec<(Arc<dyn datafusion::physical_expr::PhysicalExpr>, String)> = p
                .iter()
                .map(|i| {
                    let name = schema.field(*i).name().clone();
                    (
                        Arc::new(datafusion::physical_expr::expressions::Column::new(
                            &name, *i,
                        )) as _,
                        name,
                    )
                })
                .collect();
            plan = Arc::new(
                datafusion::physical_plan::projection::ProjectionExec::try_new(columns, plan)?,
            );
        }
        Ok(plan)
    }

    /// A scan of the table's catalogued files (or its format's own reader).
    async fn scan_files(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if let Some(delegate) = &self.delegate {
            let plan = delegate.scan(state, projection, filters, limit).await?;
            if limit.is_none() || !passes_limit_to_nothing(&plan) {
                return Ok(plan);
            }
            // deltalake answers a scan of partition columns alone from its log, in a plan
            // that lets a limit pass through it with nowhere to go, so DataFusion would drop
            // the limit. Reading one data column more takes the ordinary (limited) path;
            // the extra column is projected away.
            let wanted: Vec<usize> = projection
                .cloned()
                .unwrap_or_else(|| (0..self.schema.fields().len()).collect());
            for extra in (0..self.schema.fields().len()).filter(|i| !wanted.contains(i)) {
                let mut widened = wanted.clone();
                widened.push(extra);
                let plan = delegate.scan(state, Some(&widened), filters, limit).await?;
                if passes_limit_to_nothing(&plan) {
                    continue;
                }
                let schema = plan.schema();
                let columns: Vec<(Arc<dyn datafusion::physical_expr::PhysicalExpr>, String)> = (0
                    ..wanted.len())
                    .map(|i| {
                        let name = schema.field(i).name().clone();
                        (
                            Arc::new(datafusion::physical_expr::expressions::Column::new(
                                &name, i,
                            )) as _,
                            name,
                        )
                    })
                    .collect();
                return Ok(Arc::new(
                    datafusion::physical_plan::projection::ProjectionExec::try_new(columns, plan)?,
                ));
            }
            return Ok(plan);
        }
        let names = self.partition_names();
        let partition_filters: Vec<&Expr> = filters
            .iter()
            .filter(|f| !names.is_empty() && expr_applicable_for_cols(&names, f))
            .collect();
        let kept = self.prune_partitions(state, &partition_filters)?;
        if !names.is_empty()
            && let Some(probe) = state.config().get_extension::<crate::probe::QueryProbe>()
        {
            probe.partitions(kept.len(), self.partitions.len());
        }
        let mut files: Vec<PartitionedFile> = kept
            .iter()
            .flat_map(|p| self.partitions[*p].files.iter())
            .map(|i| self.files[*i].clone())
            .collect();
        if files.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => Arc::clone(&self.schema),
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }

        // Spread the files over the target partitions, largest first onto the lightest
        // group, so one group does not end up with all the big files.
        let groups_n = state.config().target_partitions().max(1).min(files.len());
        files.sort_by_key(|f| std::cmp::Reverse(f.object_meta.size));
        let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); groups_n];
        for f in files {
            let lightest = groups
                .iter_mut()
                .min_by_key(|(bytes, _)| *bytes)
                .ok_or_else(|| DataFusionError::Internal("no file groups".into()))?;
            lightest.0 += f.object_meta.size;
            lightest.1.push(f);
        }
        let file_groups: Vec<FileGroup> = groups
            .into_iter()
            .map(|(_, mut files)| {
                files.sort_by(|a, b| a.object_meta.location.cmp(&b.object_meta.location));
                FileGroup::new(files)
            })
            .collect();
        let part_fields: Vec<FieldRef> = self.partition_values.schema().fields().to_vec();
        let table_schema = TableSchema::builder(Arc::clone(&self.entry.file_schema))
            .with_table_partition_cols(part_fields)
            .build();
        if let Some(text) = &self.text {
            return self.scan_text(text, table_schema, file_groups, projection, limit);
        }
        let per_file: Vec<&Statistics> = file_groups
            .iter()
            .flat_map(|g| g.iter())
            .filter_map(|f| f.statistics.as_deref())
            .collect();
        let statistics = merge_statistics(
            &per_file,
            &self.schema,
            self.entry.file_schema.fields().len(),
        )?;
        let options = TableParquetOptions {
            global: state.config_options().execution.parquet.clone(),
            ..Default::default()
        };
        let source = ParquetSource::new(table_schema).with_table_parquet_options(options);
        let config = FileScanConfigBuilder::new(self.store_url.clone(), Arc::new(source))
            .with_file_groups(file_groups)
            .with_statistics(statistics)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(rows: usize, status: Option<usize>, day: &str) -> Statistics {
        let column = |distinct: Precision<usize>, value: Precision<ScalarValue>| ColumnStatistics {
            distinct_count: distinct,
            min_value: value.clone(),
            max_value: value,
            ..ColumnStatistics::new_unknown()
        };
        Statistics {
            num_rows: Precision::Exact(rows),
            total_byte_size: Precision::Absent,
            column_statistics: vec![
                column(
                    status.map_or(Precision::Absent, Precision::Inexact),
                    Precision::Absent,
                ),
                column(Precision::Absent, Precision::Absent),
                column(
                    Precision::Exact(1),
                    Precision::Exact(ScalarValue::Utf8(Some(day.into()))),
                ),
            ],
        }
    }

    #[test]
    fn distinct_counts_merge_over_files_and_partitions() {
        let schema = Schema::new(vec![
            Field::new("status", DataType::Utf8, true),
            Field::new("amount", DataType::Int64, true),
            Field::new("day", DataType::Utf8, true),
        ]);
        let files = [
            file(1_000, Some(3), "2024-01-01"),
            file(2_000, Some(3), "2024-01-01"),
            file(500, Some(2), "2024-01-02"),
        ];
        let refs: Vec<&Statistics> = files.iter().collect();
        let merged = merge_statistics(&refs, &schema, 2).unwrap();
        let distinct = |i: usize| merged.column_statistics[i].distinct_count;
        // The same few statuses in every file.
        assert_eq!(distinct(0), Precision::Inexact(3));
        // Not counted in the files: not counted in the table.
        assert_eq!(distinct(1), Precision::Absent);
        // Two days among three files (DataFusion's merge would say one).
        assert_eq!(distinct(2), Precision::Inexact(2));
        assert_eq!(merged.num_rows, Precision::Exact(3_500));

        // A file of no rows adds no day.
        let files = [file(1_000, Some(3), "a"), file(0, Some(0), "b")];
        let refs: Vec<&Statistics> = files.iter().collect();
        let merged = merge_statistics(&refs, &schema, 2).unwrap();
        assert_eq!(
            merged.column_statistics[2].distinct_count,
            Precision::Inexact(1)
        );

        // One file without a count leaves the table's column uncounted.
        let files = [file(1_000, Some(3), "a"), file(1_000, None, "b")];
        let refs: Vec<&Statistics> = files.iter().collect();
        let merged = merge_statistics(&refs, &schema, 2).unwrap();
        assert_eq!(
            merged.column_statistics[0].distinct_count,
            Precision::Absent
        );
    }
}
