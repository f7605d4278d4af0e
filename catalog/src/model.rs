//! The catalog's records: what a table is, which partitions and files it has, and the
//! statistics Tarn keeps for each file.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The inferred (or declared) type of a Hive partition column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionType {
    Int64,
    Date,
    Timestamp,
    String,
}

impl PartitionType {
    /// The Arrow type the engine exposes for this partition column.
    pub fn arrow_type(self) -> DataType {
        match self {
            PartitionType::Int64 => DataType::Int64,
            PartitionType::Date => DataType::Date32,
            PartitionType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            PartitionType::String => DataType::Utf8,
        }
    }
}

impl fmt::Display for PartitionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PartitionType::Int64 => "int64",
            PartitionType::Date => "date",
            PartitionType::Timestamp => "timestamp",
            PartitionType::String => "string",
        })
    }
}

impl FromStr for PartitionType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "int64" | "bigint" | "int" => Ok(Self::Int64),
            "date" => Ok(Self::Date),
            "timestamp" => Ok(Self::Timestamp),
            "string" | "varchar" => Ok(Self::String),
            other => Err(format!(
                "unknown partition type '{other}': use int64, date, timestamp or string"
            )),
        }
    }
}

/// One Hive partition column of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: PartitionType,
}

/// How a table's data is stored: loose files of one format, or a table format with its
/// own log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TableFormat {
    Parquet,
    Csv,
    Json,
    /// A Delta Lake table: its log says which files make each version.
    Delta,
}

impl TableFormat {
    /// Every format, as `STORED AS` and the catalog name them.
    pub const ALL: [TableFormat; 4] = [
        TableFormat::Parquet,
        TableFormat::Csv,
        TableFormat::Json,
        TableFormat::Delta,
    ];

    /// The format's name in the catalog and in `STORED AS` (lower case).
    pub fn as_str(self) -> &'static str {
        match self {
            TableFormat::Parquet => "parquet",
            TableFormat::Csv => "csv",
            TableFormat::Json => "json",
            TableFormat::Delta => "delta",
        }
    }

    /// The format named `name` (any case), if Tarn reads it.
    pub fn parse(name: &str) -> Option<TableFormat> {
        TableFormat::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(name))
    }
}

impl std::fmt::Display for TableFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A table as the catalog records it.
#[derive(Debug, Clone)]
pub struct TableEntry {
    pub id: i64,
    pub database: String,
    pub name: String,
    /// URL of the table's root, ending in `/`.
    pub location: String,
    pub format: TableFormat,
    pub partition_columns: Vec<PartitionColumn>,
    /// The merged schema of the file columns (partition columns not included).
    pub file_schema: SchemaRef,
    pub schema_version: i64,
    /// Bumped on every change to the table's files or schema.
    pub version: i64,
    pub updated_at: String,
}

impl TableEntry {
    /// The schema queries see: file columns, then partition columns.
    pub fn table_schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .file_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.extend(
            self.partition_columns
                .iter()
                .map(|c| Field::new(&c.name, c.data_type.arrow_type(), true)),
        );
        std::sync::Arc::new(Schema::new(fields))
    }
}

/// Statistics of one column in one file, as strings that cast back to the column's type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ColumnStats {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub min: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub nulls: Option<u64>,
    /// Distinct non-null values, counted from the dictionary pages of a column whose
    /// every chunk is dictionary-encoded with a small dictionary (see the crawler's footer
    /// reader); absent for other columns.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub distinct: Option<u64>,
}

/// Per-column statistics of a file, keyed by column name.
pub type FileStats = BTreeMap<String, ColumnStats>;

/// The version of the per-file statistics the crawler records; a re-crawl reads again the
/// footer of a Parquet file recorded with an older one. 1: distinct counts of strings.
pub const STATS_VERSION: i64 = 1;

/// A part whose distinct values are at least this share of its values is taken to hold
/// values no other part holds.
const UNIQUE_SHARE: f64 = 0.9;

/// A column's distinct values over parts (a file's row groups, a table's files), from
/// each part's `(distinct, values)`, its distinct and non-null values. A part whose values
/// are nearly all distinct (an id, a name per row) is taken to hold values no other part
/// holds, so those parts add up; any other part, values the other parts may hold too, so
/// it adds nothing beyond the largest count. A status column gives its handful of values
/// however many files it spans; a name unique per row, the rows. When parts repeat values
/// of their own (each day's files a different set of codes), the count is low: an
/// equality on the column is then estimated to keep more rows than it does, the safe side
/// for a planner.
pub fn combine_distinct(parts: impl IntoIterator<Item = (u64, u64)>) -> u64 {
    let (mut largest, mut unique, mut values) = (0u64, 0u64, 0u64);
    for (distinct, part_values) in parts {
        let distinct = distinct.min(part_values);
        largest = largest.max(distinct);
        if distinct as f64 >= UNIQUE_SHARE * part_values as f64 {
            unique = unique.saturating_add(distinct);
        }
        values = values.saturating_add(part_values);
    }
    largest.max(unique).min(values)
}

/// A data file as the catalog records it.
#[derive(Debug, Clone)]
pub struct FileEntry {
    /// Object path inside the table's store.
    pub path: String,
    pub size: u64,
    pub e_tag: Option<String>,
    pub last_modified: DateTime<Utc>,
    pub row_count: u64,
    /// Size of the Parquet footer, a hint that saves readers a round trip.
    pub footer_size: Option<u64>,
    /// The file's own schema (its columns as written).
    pub file_schema: SchemaRef,
    pub stats: FileStats,
    /// The version of the statistics `stats` holds ([`STATS_VERSION`] when they were read
    /// by this build).
    pub stats_version: i64,
    /// Raw partition values in the table's partition column order (`None` is NULL).
    pub partition_values: Vec<Option<String>>,
    /// Path of the partition folder the file is in (the table root when unpartitioned).
    pub partition_location: String,
}

/// A partition as the catalog records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionEntry {
    pub values: Vec<Option<String>>,
    pub location: String,
    pub file_count: i64,
    pub total_bytes: i64,
    pub row_count: i64,
}

/// How much a table holds, as the catalog records it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableSize {
    pub files: i64,
    pub rows: i64,
    pub bytes: i64,
    pub partitions: i64,
}

/// A database and its tables' names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseEntry {
    pub name: String,
    pub description: String,
}

/// What one table's crawl changes, committed in one transaction.
#[derive(Debug, Clone)]
pub struct TableCommit {
    pub database: String,
    pub name: String,
    pub location: String,
    pub format: TableFormat,
    pub partition_columns: Vec<PartitionColumn>,
    /// The merged file schema after this crawl.
    pub file_schema: SchemaRef,
    /// The table's schema version `file_schema` was merged onto (`None`: a new table, or
    /// a schema that replaces the table's whatever it is, as a declared one does). When
    /// another writer has changed the schema since, the commit fails with
    /// [`crate::Error::SchemaMoved`] and changes nothing, so no writer's columns are lost
    /// to another's merge.
    pub base_schema_version: Option<i64>,
    /// Files new or changed since the last crawl (a changed file replaces the old row).
    pub upserts: Vec<FileEntry>,
    /// Paths of files that are gone.
    pub removals: Vec<String>,
    /// When set, stored as the table's declared layout in the same transaction.
    pub declared: Option<Declared>,
    /// What a table format with its own log records of the version catalogued (a Delta
    /// table's version), stored as the `format_state` property; a change is a new table
    /// version.
    pub format_state: Option<FormatState>,
    /// The table must not exist yet (`CREATE EXTERNAL TABLE`): when another statement
    /// created it first, the commit fails and changes nothing.
    pub create_only: bool,
    /// Each partition holds exactly one file (a materialized view's storage): a commit that
    /// would leave two in one (another writer replaced the file this one read) fails with
    /// [`crate::Error::Conflict`] and changes nothing.
    pub one_file_per_partition: bool,
    /// Each removal is a file this writer read and rewrote (a compaction): when another
    /// writer removed one of them first, the commit fails with [`crate::Error::Conflict`]
    /// and changes nothing, so no row is catalogued twice.
    pub removals_read: bool,
    /// The upserts come from a listing of the store (a crawl): a file another writer
    /// replaced since the listing (scheduled for deletion, or written and not yet
    /// committed) is left out, so a crawl never brings back a file a compaction or an
    /// overwrite took out.
    pub from_listing: bool,
    /// The commit delivers a stream's buffered records (see `TableProperties::stream`):
    /// the log's id and the newest log sequence number whose records these files hold,
    /// recorded in the same transaction so a replay after a crash skips them.
    pub stream_flushed: Option<(String, u64)>,
}

/// Outcome of committing a [`TableCommit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitOutcome {
    pub created: bool,
    pub new_schema_version: bool,
    pub partitions_added: u64,
    pub partitions_removed: u64,
    pub changed: bool,
}

/// How a crawler crawls: the options of `tarn crawl`, kept with the crawler.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CrawlerOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub partition_types: BTreeMap<String, PartitionType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tables: Option<usize>,
    #[serde(default)]
    pub schema_change: SchemaChangePolicy,
    /// CSV and JSON: records sampled per new file to infer its columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rows: Option<usize>,
    #[serde(default)]
    pub deletion: DeletionPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_level: Option<usize>,
    /// Event mode: the SQS queue of the location's S3 event notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_queue: Option<String>,
}

/// What a crawl does when the files change an existing table's columns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemaChangePolicy {
    /// Apply it: new columns are added, types widen, columns no file has are dropped.
    #[default]
    Update,
    /// Keep the table's schema, catalogue the files, and report the change as a problem.
    Log,
    /// Leave the table as it was (no file added or removed) and report the change.
    Fail,
}

/// What a crawl does with a table whose folder is gone (Glue's deletion behaviour).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeletionPolicy {
    /// Keep the table, without files, marked deprecated (queries answer empty) until a
    /// crawl finds its folder again.
    #[default]
    Mark,
    /// Drop the table from the catalog.
    Delete,
}

impl std::fmt::Display for DeletionPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Mark => "mark",
            Self::Delete => "delete",
        })
    }
}

impl std::str::FromStr for DeletionPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "mark" => Ok(Self::Mark),
            "delete" => Ok(Self::Delete),
            other => Err(format!(
                "unknown deletion policy '{other}'; use mark (keep the table, marked \
                 deprecated) or delete (drop it from the catalog)"
            )),
        }
    }
}

impl std::fmt::Display for SchemaChangePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Update => "update",
            Self::Log => "log",
            Self::Fail => "fail",
        })
    }
}

impl std::str::FromStr for SchemaChangePolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "update" => Ok(Self::Update),
            "log" => Ok(Self::Log),
            "fail" => Ok(Self::Fail),
            other => Err(format!(
                "unknown schema change policy '{other}': use update, log or fail"
            )),
        }
    }
}

/// Storage tables of materialized views are named `__rollup_<view>` and left out of table
/// listings.
pub const ROLLUP_STORAGE_PREFIX: &str = "__rollup_";

/// The storage table of materialized view `name`.
pub fn rollup_storage_table(name: &str) -> String {
    format!("{ROLLUP_STORAGE_PREFIX}{name}")
}

/// What a catalogued table is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// A table of the lake: crawled, created by DDL or by ingest.
    Base,
    /// The rows of a materialized view, kept by Tarn (hidden from listings; crawls leave
    /// it alone).
    RollupStorage,
}

impl TableKind {
    /// The kind of the table named `name`.
    pub fn of(name: &str) -> Self {
        if name.starts_with(ROLLUP_STORAGE_PREFIX) {
            Self::RollupStorage
        } else {
            Self::Base
        }
    }
}

/// A crawler as the catalog records it.
#[derive(Debug, Clone, PartialEq)]
pub struct CrawlerDef {
    pub name: String,
    /// Normalised location URL.
    pub location: String,
    pub database: String,
    pub options: CrawlerOptions,
    /// Cron expression (5 fields, or 6 with seconds); `None` runs only on demand.
    pub schedule: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; when the crawler last started.
    pub last_started_at: Option<String>,
}

/// A rollup's definition (`CREATE MATERIALIZED VIEW`), as the catalog keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollupDef {
    pub database: String,
    pub name: String,
    pub base_database: String,
    pub base_table: String,
    /// The statement as the user wrote it.
    pub sql: String,
    /// Grouping columns, in the order of the definition.
    pub dimensions: Vec<RollupDimension>,
    /// Stored aggregate states.
    pub measures: Vec<RollupMeasure>,
    /// The definition's `WHERE` clause, as SQL over the base table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// How stale (seconds since the last refresh) answers may be before base partitions the
    /// rollup has not caught up with are read from the base; `None` means always exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_staleness_secs: Option<u64>,
    /// How many of the base's partition columns (leading ones) the rollup's storage is
    /// partitioned by; `None` means all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_depth: Option<usize>,
}

impl RollupDef {
    /// The storage's partition depth for a base with `columns` partition columns.
    pub fn depth(&self, columns: usize) -> usize {
        self.storage_depth.unwrap_or(columns).min(columns)
    }
}

/// One grouping column of a rollup: a base column, or a base timestamp truncated to a grain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollupDimension {
    /// Column name in the rollup's storage.
    pub name: String,
    /// The base column.
    pub column: String,
    /// `date_trunc` grain (`hour`, `day`, …), when the dimension is a truncated time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grain: Option<String>,
}

/// The aggregate state kinds a rollup stores; each re-aggregates exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MeasureKind {
    Count,
    Sum,
    Min,
    Max,
    /// A HyperLogLog sketch (`approx_distinct`), merged at query time.
    #[serde(rename = "approx_distinct")]
    ApproxDistinct,
    /// `count(DISTINCT column)` per rollup group: exact only for a query grouped by
    /// exactly the rollup's groups.
    #[serde(rename = "count_distinct")]
    CountDistinct,
}

impl MeasureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MeasureKind::Count => "count",
            MeasureKind::Sum => "sum",
            MeasureKind::Min => "min",
            MeasureKind::Max => "max",
            MeasureKind::ApproxDistinct => "approx_distinct",
            MeasureKind::CountDistinct => "count_distinct",
        }
    }
}

/// One stored aggregate state: `kind(column)`, or `count(*)` when `column` is `None`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RollupMeasure {
    pub kind: MeasureKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
}

impl RollupMeasure {
    /// The state's column name in the rollup's storage.
    pub fn storage_name(&self) -> String {
        match &self.column {
            Some(c) => format!("{}__{c}", self.kind.as_str()),
            None => "__count".to_string(),
        }
    }
}

/// A rollup with its bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupRecord {
    pub definition: RollupDef,
    pub created_at: String,
    /// RFC 3339; when the last refresh finished.
    pub refreshed_at: Option<String>,
    /// Why the last refresh failed, when it did (cleared by the next that succeeds).
    pub last_error: Option<String>,
    /// RFC 3339; when that refresh failed.
    pub last_error_at: Option<String>,
}

/// A view (`CREATE VIEW`): a saved query, planned when the catalog changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewDef {
    pub database: String,
    pub name: String,
    /// The query (`SELECT …`) as written.
    pub query: String,
    /// The database its unqualified table names resolve in (the creating session's
    /// default, as Trino keeps it).
    pub resolve_in: String,
    /// The columns the query gave when the view was created or replaced: name and type.
    pub columns: Vec<ViewColumn>,
}

/// One column of a view as it was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
}

/// A view with its bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewRecord {
    pub definition: ViewDef,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; when it was last replaced (its creation when never).
    pub updated_at: String,
}

/// One statement of the query history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRecord {
    pub query_id: String,
    pub user: String,
    pub database: String,
    pub sql: String,
    /// finished, failed, cancelled, timeout, resource_exhausted or refused.
    pub state: String,
    /// RFC 3339, UTC.
    pub submitted_at: String,
    pub queued_ms: i64,
    pub execution_ms: i64,
    pub rows: i64,
    pub error: Option<String>,
    /// What the statement cost.
    pub stats: QueryStats,
}

/// What a statement cost, as its front door and the engine measured it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryStats {
    /// The front door it came through: `flight`, `cli`, `admin`, `http`.
    pub front_door: String,
    pub planning_ms: i64,
    /// Arrow bytes of the result batches sent.
    pub bytes_returned: i64,
    /// Bytes read from the lake (Parquet: the ranges read; text: the files' sizes).
    pub bytes_scanned: i64,
    pub files_scanned: i64,
    pub partitions_scanned: i64,
    /// Partitions left out by filters on partition columns.
    pub partitions_pruned: i64,
    /// The materialized view that answered (`db.view`), if one did.
    pub materialized_view: Option<String>,
    pub result_cache_hit: bool,
    pub peak_memory_bytes: i64,
    pub spilled_bytes: i64,
}

#[cfg(test)]
mod tests {
    use super::combine_distinct;

    #[test]
    fn distinct_counts_combine_by_how_much_values_repeat() {
        // A status in every part: the parts share their few values.
        assert_eq!(combine_distinct([(3, 1_000_000); 60]), 3);
        // Values unique within each part: the parts share none.
        assert_eq!(combine_distinct([(5_000, 5_000), (5_000, 5_000)]), 10_000);
        // The same codes in every file: the largest count, not their sum.
        assert_eq!(combine_distinct([(5_000, 10_000); 1_000]), 5_000);
        // Unique parts add up beside repeating ones.
        assert_eq!(combine_distinct([(100, 100), (95, 100), (3, 1_000)]), 195);
        // Never more than the rows; a part of no rows adds nothing.
        assert_eq!(combine_distinct([(40, 25), (0, 0)]), 25);
        assert_eq!(combine_distinct([]), 0);
    }
}

// ---------------------------------------------------------------------------------------
// A table's properties: what the catalog keeps with a table besides its columns and files,
// one JSON object per table, read and written only as [`TableProperties`]. Every part has
// its own type, and a value that does not decode is reported as a damaged catalog entry
// naming the table ([`crate::Error::CatalogCorrupt`]), never read as empty: an empty
// declared layout or an empty list of pinned partitions would silently change what later
// crawls do.

/// A table's properties.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableProperties {
    /// Why the table is deprecated (its folder is gone: it answers empty until a crawl
    /// finds the folder again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated: Option<String>,
    /// What the table's format keeps of the version catalogued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format_state: Option<FormatState>,
    /// What a user declared about the table instead of letting the crawl infer it.
    #[serde(default, skip_serializing_if = "Declared::is_empty")]
    pub declared: Declared,
    /// Partitions in folders the user named.
    #[serde(
        default,
        rename = "partition_locations",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub pinned_partitions: Vec<PinnedPartition>,
    /// Streamed records delivered into the table's files: by write-ahead log id, the
    /// newest log sequence number delivered. A server replaying its log after a crash
    /// skips the records at or below it, so none is catalogued twice.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stream: BTreeMap<String, u64>,
}

/// What a table's format keeps of the version the catalog holds. Which one a table has
/// follows from its [`crate::TableFormat`]; Parquet tables keep none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FormatState {
    /// A Delta table: the version of its log the catalog holds, with that version's
    /// partition columns and size. A new version is a new table version.
    Delta {
        version: u64,
        #[serde(default)]
        partition_columns: Vec<String>,
        files: u64,
        bytes: u64,
    },
    /// A CSV table: its dialect, fixed by its first crawl.
    Csv { has_header: bool, delimiter: char },
    /// A JSON-lines table: nothing beyond its format.
    Json(JsonState),
}

/// A JSON-lines table's state: empty, and only empty (so a damaged CSV or Delta state is
/// an error rather than read as this).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonState {}

impl FormatState {
    /// The Delta version catalogued, if this is a Delta table's state.
    pub fn delta_version(&self) -> Option<u64> {
        match self {
            FormatState::Delta { version, .. } => Some(*version),
            _ => None,
        }
    }

    /// A CSV table's header and delimiter, if this is a CSV table's state.
    pub fn csv_dialect(&self) -> Option<(bool, u8)> {
        match self {
            FormatState::Csv {
                has_header,
                delimiter,
            } => Some((*has_header, u8::try_from(*delimiter).unwrap_or(b','))),
            _ => None,
        }
    }
}

impl TableProperties {
    /// A CSV table's header and delimiter, as its first crawl fixed them.
    pub fn csv_dialect(&self) -> Option<(bool, u8)> {
        self.format_state.as_ref()?.csv_dialect()
    }

    /// The Delta version catalogued, for a Delta table.
    pub fn delta_version(&self) -> Option<u64> {
        self.format_state.as_ref()?.delta_version()
    }
}

/// What a user declared about a table instead of letting the crawl infer it
/// (`CREATE EXTERNAL TABLE`, `--partition-type`). Kept so later crawls and
/// `MSCK REPAIR TABLE` keep it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Declared {
    /// The file columns, fixed: files are read as this schema, nothing is added or dropped.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "schema_hex")]
    pub schema: Option<SchemaRef>,
    /// The partition columns, in folder order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_keys: Option<Vec<String>>,
    /// Partition column types that override inference.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub partition_types: BTreeMap<String, PartitionType>,
}

impl Declared {
    pub fn is_empty(&self) -> bool {
        *self == Declared::default()
    }

    /// What is declared now wins; what it leaves open comes from what was declared before.
    pub fn or(&self, earlier: &Declared) -> Declared {
        let mut partition_types = earlier.partition_types.clone();
        partition_types.extend(self.partition_types.clone());
        Declared {
            schema: self.schema.clone().or_else(|| earlier.schema.clone()),
            partition_keys: self
                .partition_keys
                .clone()
                .or_else(|| earlier.partition_keys.clone()),
            partition_types,
        }
    }
}

/// A partition whose files are in a folder the user named
/// (`ALTER TABLE … ADD PARTITION (…) LOCATION '…'`). Its files take these values whatever
/// their folders are called, and a folder outside the table's own is listed with the
/// table on every crawl.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PinnedPartition {
    /// Values in the table's partition column order (`None` is NULL).
    pub values: Vec<Option<String>>,
    /// Object path of the folder in the table's store, without a trailing `/`.
    pub path: String,
}

/// A declared schema kept as its Arrow IPC bytes, hex-encoded.
mod schema_hex {
    use arrow_schema::SchemaRef;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(schema: &Option<SchemaRef>, s: S) -> Result<S::Ok, S::Error> {
        match schema {
            Some(schema) => {
                let bytes = arrow_ipc::writer::IpcDataGenerator::default()
                    .schema_to_bytes_with_dictionary_tracker(
                        schema,
                        &mut arrow_ipc::writer::DictionaryTracker::new(false),
                        &arrow_ipc::writer::IpcWriteOptions::default(),
                    )
                    .ipc_message;
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                s.serialize_some(&hex)
            }
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SchemaRef>, D::Error> {
        let Some(hex) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(serde::de::Error::custom)?;
        arrow_ipc::convert::try_schema_from_flatbuffer_bytes(&bytes)
            .map(|s| Some(std::sync::Arc::new(s)))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod properties_tests {
    use super::*;

    #[test]
    fn properties_written_before_they_were_typed_read_back() {
        let delta = serde_json::json!({
            "format_state": {"version": 3, "partition_columns": ["day"], "files": 4, "bytes": 900},
            "deprecated": "folder gone",
            "partition_locations": [{"values": ["1", null], "path": "x/y"}],
        });
        let p: TableProperties = serde_json::from_value(delta.clone()).unwrap();
        assert_eq!(
            p.format_state.as_ref().and_then(FormatState::delta_version),
            Some(3)
        );
        assert_eq!(p.deprecated.as_deref(), Some("folder gone"));
        assert_eq!(p.pinned_partitions[0].values, vec![Some("1".into()), None]);
        assert_eq!(serde_json::to_value(&p).unwrap(), delta);

        let csv: TableProperties = serde_json::from_value(serde_json::json!({
            "format_state": {"has_header": false, "delimiter": "|"}
        }))
        .unwrap();
        assert_eq!(
            csv.format_state,
            Some(FormatState::Csv {
                has_header: false,
                delimiter: '|'
            })
        );
        let json: TableProperties =
            serde_json::from_value(serde_json::json!({"format_state": {}})).unwrap();
        assert_eq!(json.format_state, Some(FormatState::Json(JsonState {})));
        assert_eq!(
            serde_json::to_value(TableProperties::default()).unwrap(),
            serde_json::json!({})
        );
    }

    #[test]
    fn a_malformed_part_is_an_error_not_an_empty_value() {
        let bad = serde_json::json!({"partition_locations": [{"values": 7}]});
        assert!(serde_json::from_value::<TableProperties>(bad).is_err());
        let bad = serde_json::json!({"declared": {"schema": "zz"}});
        assert!(serde_json::from_value::<TableProperties>(bad).is_err());
        let bad = serde_json::json!({"format_state": {"has_header": "yes", "delimiter": ","}});
        assert!(serde_json::from_value::<TableProperties>(bad).is_err());
    }
}
