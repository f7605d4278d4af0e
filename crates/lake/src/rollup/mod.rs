//! Materialized rollups: `CREATE MATERIALIZED VIEW … AS SELECT dims, aggregates FROM base
//! GROUP BY dims`, stored as Parquet, refreshed per base partition, and used by a query
//! rewrite ([`rewrite`]) that keeps every answer exact.
//!
//! A rollup's rows are kept per base partition: its storage table
//! `<database>.__rollup_<name>` has the base's partition columns, and each storage
//! partition holds the definition's groups computed from that one base partition. Queries
//! re-aggregate across partitions (sum of counts and sums, min of mins, max of maxes), so a
//! partition can be recomputed alone. Each storage file's name carries the fingerprint of
//! the base partition's files (paths, sizes, ETags) it was computed from; a refresh
//! recomputes the partitions whose fingerprint changed and swaps their files in one
//! catalog commit, so readers see a partition's old rows or its new ones, never a mix.

pub mod rewrite;
pub mod sketch;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::{cast, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use chrono::{DateTime, Utc};
use datafusion::common::{Column, ScalarValue, TableReference};
use datafusion::logical_expr::{Expr, LogicalPlan, col, lit};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Query, SetExpr};
use object_store::ObjectMeta;
use object_store::path::Path;
use sha2::{Digest, Sha256};

use crate::catalog::{
    MeasureKind, PartitionColumn, RollupDef, RollupDimension, RollupMeasure, RollupRecord,
};
use crate::error::{Error, Result};
use crate::storage::Location;
use crate::table::{CATALOG_NAME, CatalogTable, partition_scalar};

/// Storage tables of rollups are named `__rollup_<name>` and left out of table listings.
pub use crate::catalog::ROLLUP_STORAGE_PREFIX as STORAGE_PREFIX;

/// The storage table of rollup `name`.
pub fn storage_table(name: &str) -> String {
    crate::catalog::rollup_storage_table(name)
}

/// The materialized view whose storage table is `name`, if it is one.
pub fn view_of_storage(name: &str) -> Option<&str> {
    name.strip_prefix(STORAGE_PREFIX)
}

/// Whether a table name is a rollup's storage (hidden from listings).
pub fn is_storage_table(name: &str) -> bool {
    crate::catalog::TableKind::of(name) == crate::catalog::TableKind::RollupStorage
}

/// `date_trunc` grains, finest first.
const GRAINS: &[&str] = &[
    "microsecond",
    "millisecond",
    "second",
    "minute",
    "hour",
    "day",
    "week",
    "month",
    "quarter",
    "year",
];

/// Whether rows truncated to `fine` can be truncated again to `coarse` with the same
/// result as truncating the originals: every coarse bucket is a union of fine ones (weeks
/// do not nest in months, quarters or years).
pub fn grain_derivable(coarse: &str, fine: &str) -> bool {
    let rank = |g: &str| GRAINS.iter().position(|x| *x == g);
    let (Some(c), Some(f)) = (rank(coarse), rank(fine)) else {
        return false;
    };
    if fine == "week" {
        return coarse == "week";
    }
    c >= f
}

/// A base partition to recompute: typed values, raw values, fingerprint of its files.
pub(crate) type StalePartition = (Vec<ScalarValue>, Vec<Option<String>>, String);

/// Attempts of a refresh whose commit conflicts with another writer's.
pub(crate) const REFRESH_ATTEMPTS: usize = 3;

/// Rows refreshed per aggregation query (base partitions computed together).
pub(crate) const PARTITIONS_PER_QUERY: usize = 64;

/// The fingerprint of a base partition: a digest of its files' paths, sizes and ETags.
pub fn fingerprint<'a>(files: impl IntoIterator<Item = &'a ObjectMeta>) -> String {
    let mut lines: Vec<String> = files
        .into_iter()
        .map(|f| {
            format!(
                "{}\t{}\t{}",
                f.location,
                f.size,
                f.e_tag.as_deref().unwrap_or("")
            )
        })
        .collect();
    lines.sort();
    let mut hasher = Sha256::new();
    for line in lines {
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
    }
    let digest = hasher.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The fingerprint a storage file was computed from (`part-<fingerprint>-<id>.parquet`).
pub fn file_fingerprint(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next()?;
    let rest = name.strip_prefix("part-")?;
    rest.split('-').next()
}

/// Storage partitions by values: their fingerprint. A refresh writes exactly one file per
/// partition; a partition with several (two refreshes that raced, each replacing the file it
/// saw) has `None`, so it counts as stale and is read from the base until refreshed again.
pub fn storage_fingerprints(storage: &CatalogTable) -> HashMap<Vec<ScalarValue>, Option<String>> {
    storage
        .partition_files()
        .into_iter()
        .map(|(values, files)| {
            let print = match files.as_slice() {
                [only] => file_fingerprint(only.location.as_ref()).map(str::to_string),
                _ => None,
            };
            (values, print)
        })
        .collect()
}

/// The storage column of a dimension on `column`, truncated to `grain` when given.
pub(crate) fn dimension_name(column: &str, grain: Option<&str>) -> String {
    match grain {
        Some(g) => format!("{column}__{g}"),
        None => column.to_string(),
    }
}

/// An unqualified column reference.
pub(crate) fn column(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

/// The expression of a dimension over the base table's columns.
pub(crate) fn dimension_expr(dim: &RollupDimension) -> Expr {
    match &dim.grain {
        Some(g) => datafusion::functions::expr_fn::date_trunc(lit(g.as_str()), column(&dim.column)),
        None => column(&dim.column),
    }
}

/// The expression computing a measure's state over the base table's columns.
pub(crate) fn measure_expr(measure: &RollupMeasure) -> Expr {
    use datafusion::functions_aggregate::expr_fn::{count, max, min, sum};
    let arg = match &measure.column {
        Some(c) => column(c),
        None => lit(1i64),
    };
    match measure.kind {
        MeasureKind::Count => count(arg),
        MeasureKind::Sum => sum(arg),
        MeasureKind::Min => min(arg),
        MeasureKind::Max => max(arg),
        MeasureKind::ApproxDistinct => sketch::state_udaf().call(vec![arg]),
        MeasureKind::CountDistinct => datafusion::functions_aggregate::expr_fn::count_distinct(arg),
    }
}

/// Reads a `CREATE MATERIALIZED VIEW` query into a definition.
///
/// # Errors
/// [`Error::Sql`] naming what the definition may not contain: several tables, a grouping
/// that is not a column or `date_trunc('grain', column)`, an aggregate Tarn cannot merge.
/// `predicates` as one SQL condition over the base table's columns (unqualified).
fn base_filter(predicates: &[&Expr]) -> datafusion::error::Result<String> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    let mut parts = Vec::new();
    for predicate in predicates {
        let unqualified = (*predicate)
            .clone()
            .transform(|e| match e {
                Expr::Column(c) => Ok(Transformed::yes(Expr::Column(
                    datafusion::common::Column::new_unqualified(c.name),
                ))),
                other => Ok(Transformed::no(other)),
            })?
            .data;
        parts.push(format!(
            "({})",
            datafusion::sql::unparser::expr_to_sql(&unqualified)?
        ));
    }
    Ok(parts.join(" AND "))
}

pub(crate) fn define(
    plan: &LogicalPlan,
    database: &str,
    name: &str,
    sql: &str,
    query: &Query,
) -> Result<RollupDef> {
    let unsupported = |what: String| {
        Error::Sql(format!(
            "materialized view {database}.{name}: {what}; a materialized view is \
             SELECT <columns or date_trunc('grain', column)>, <count | sum | min | max | avg | \
             approx_distinct | count(DISTINCT)> \
             FROM one table [WHERE …] GROUP BY <those columns>"
        ))
    };
    // Projection → Aggregate → [Filter] → [SubqueryAlias] → TableScan.
    let mut node = plan;
    while let LogicalPlan::Projection(p) = node {
        node = p.input.as_ref();
    }
    let LogicalPlan::Aggregate(aggregate) = node else {
        return Err(unsupported("the query has no GROUP BY".into()));
    };
    let mut node = aggregate.input.as_ref();
    let mut predicates: Vec<&Expr> = Vec::new();
    // Whether the query reads a view (`CREATE VIEW`) that picks the base's columns.
    let mut through_view = false;
    let scan = loop {
        match node {
            LogicalPlan::Filter(f) => {
                predicates.push(&f.predicate);
                node = f.input.as_ref();
            }
            LogicalPlan::SubqueryAlias(a) => node = a.input.as_ref(),
            LogicalPlan::Projection(p) if p.expr.iter().all(rewrite::keeps_its_column) => {
                through_view = true;
                node = p.input.as_ref();
            }
            LogicalPlan::TableScan(scan) => break scan,
            other => {
                return Err(unsupported(format!(
                    "it reads {} where one table is expected",
                    other.display()
                )));
            }
        }
    };
    let base_entry = rewrite::catalog_entry(&scan.source).ok_or_else(|| {
        unsupported(format!(
            "'{}' is not a table of Tarn's catalog",
            scan.table_name
        ))
    })?;
    if is_storage_table(&base_entry.name) {
        return Err(unsupported(
            "it reads another materialized view's storage".into(),
        ));
    }
    // Storage is partitioned by all but the finest base partition column (a year of hourly
    // partitions is kept in 365 daily files, not 8,760): few files for queries over long
    // ranges, and one day recomputed when one hour changes.
    let columns = base_entry.partition_columns.len();
    let depth = if columns >= 2 { columns - 1 } else { columns };
    let partition_names: Vec<&str> = base_entry.partition_columns[..depth]
        .iter()
        .map(|c| c.name.as_str())
        .collect();

    let mut dimensions = Vec::new();
    let mut grouped_partitions = Vec::new();
    for expr in &aggregate.group_expr {
        let expr = rewrite::strip(expr);
        let (column, grain) = match &expr {
            Expr::Column(c) => (c.name.clone(), None),
            other => match rewrite::truncation(other) {
                Some((grain, c)) => (c, Some(grain)),
                None => {
                    return Err(unsupported(format!(
                        "GROUP BY {other} is not a column or date_trunc('grain', column)"
                    )));
                }
            },
        };
        // Partition columns are always kept (storage is partitioned like the base).
        if grain.is_none() && partition_names.contains(&column.as_str()) {
            grouped_partitions.push(column);
            continue;
        }
        let dim = RollupDimension {
            name: dimension_name(&column, grain.as_deref()),
            column,
            grain,
        };
        if !dimensions.contains(&dim) {
            dimensions.push(dim);
        }
    }
    let measures = measures_of(
        aggregate,
        &base_entry,
        &partition_names,
        &grouped_partitions,
        &unsupported,
    )?;
    let filter = if predicates.is_empty() {
        None
    } else if through_view {
        // The view's WHERE and the query's, written over the base's columns.
        Some(base_filter(&predicates).map_err(|e| unsupported(e.to_string()))?)
    } else {
        match query.body.as_ref() {
            SetExpr::Select(select) => select.selection.as_ref().map(|e| e.to_string()),
            _ => None,
        }
    };
    Ok(RollupDef {
        database: database.to_string(),
        name: name.to_string(),
        base_database: base_entry.database.clone(),
        base_table: base_entry.name.clone(),
        sql: sql.to_string(),
        dimensions,
        measures,
        filter,
        max_staleness_secs: None,
        storage_depth: Some(depth),
    })
}

/// The mergeable measures a view keeps for `aggregate`'s aggregates: always `count(*)`,
/// an average as a sum and a count, `count(DISTINCT)` only where each rollup row is a whole
/// group (every storage partition column of `partition_names` among `grouped_partitions`).
fn measures_of(
    aggregate: &datafusion::logical_expr::Aggregate,
    base_entry: &crate::catalog::TableEntry,
    partition_names: &[&str],
    grouped_partitions: &[String],
    unsupported: &dyn Fn(String) -> Error,
) -> Result<Vec<RollupMeasure>> {
    let mut measures = vec![RollupMeasure {
        kind: MeasureKind::Count,
        column: None,
    }];
    let mut add = |m: RollupMeasure| {
        if !measures.contains(&m) {
            measures.push(m);
        }
    };
    for expr in &aggregate.aggr_expr {
        let expr = rewrite::strip(expr);
        let Expr::AggregateFunction(f) = &expr else {
            return Err(unsupported(format!("{expr} is not an aggregate")));
        };
        let p = &f.params;
        if p.distinct && f.func.name() != "count" {
            return Err(unsupported(format!(
                "{expr}: DISTINCT aggregates other than count cannot be kept"
            )));
        }
        if p.filter.is_some() || !p.order_by.is_empty() {
            return Err(unsupported(format!(
                "{expr}: FILTER and ORDER BY in aggregates are not supported"
            )));
        }
        let argument = match p.args.as_slice() {
            [] => None,
            [Expr::Literal(v, _)] if !v.is_null() && f.func.name() == "count" => None,
            [Expr::Column(c)] => Some(c.name.clone()),
            _ => {
                return Err(unsupported(format!(
                    "{expr}: aggregate arguments must be a column"
                )));
            }
        };
        let kind = |k| RollupMeasure {
            kind: k,
            column: argument.clone(),
        };
        match (f.func.name(), &argument) {
            ("count", Some(c)) if p.distinct => {
                // Kept per rollup row, which must then be a whole group: every storage
                // partition column among the GROUP BY.
                let missing: Vec<&str> = partition_names
                    .iter()
                    .copied()
                    .filter(|n| !grouped_partitions.iter().any(|g| g == n))
                    .collect();
                if !missing.is_empty() {
                    return Err(unsupported(format!(
                        "count(DISTINCT {c}) cannot be merged across partitions, so the view \
                         must GROUP BY {} as well (or keep approx_distinct({c}), which merges)",
                        missing.join(", ")
                    )));
                }
                add(kind(MeasureKind::CountDistinct))
            }
            ("approx_distinct", Some(c)) => {
                let data_type = base_entry
                    .table_schema()
                    .field_with_name(c)
                    .map(|f| f.data_type().clone())
                    .map_err(|e| unsupported(e.to_string()))?;
                if !sketch::sketchable(&data_type) {
                    return Err(unsupported(format!(
                        "approx_distinct({c}) over {data_type} values cannot be kept as a \
                         sketch (integers of 32 or 64 bits, strings, dates, timestamps, \
                         decimals and binary can)"
                    )));
                }
                add(kind(MeasureKind::ApproxDistinct))
            }
            ("count", _) => add(kind(MeasureKind::Count)),
            ("sum", Some(_)) => add(kind(MeasureKind::Sum)),
            ("min", Some(_)) => add(kind(MeasureKind::Min)),
            ("max", Some(_)) => add(kind(MeasureKind::Max)),
            ("avg", Some(_)) => {
                add(kind(MeasureKind::Sum));
                add(kind(MeasureKind::Count));
            }
            (other, _) => {
                return Err(unsupported(format!(
                    "{other}() cannot be kept as a mergeable state (count, sum, min, max, avg, \
                     approx_distinct and count(DISTINCT) can)"
                )));
            }
        }
    }
    Ok(measures)
}

/// A materialized view whose refresh failed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshFailure {
    /// `database.name`.
    pub view: String,
    pub error: String,
}

impl std::fmt::Display for RefreshFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "materialized view {} could not be refreshed ({}); queries read its base table \
             until REFRESH MATERIALIZED VIEW {} succeeds",
            self.view, self.error, self.view
        )
    }
}

/// What a refresh did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshReport {
    /// Base partitions recomputed.
    pub refreshed: usize,
    /// Storage partitions removed because their base partition is gone.
    pub removed: usize,
    /// Base partitions already up to date.
    pub unchanged: usize,
    /// Rows written.
    pub rows: u64,
}

impl std::fmt::Display for RefreshReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} partition(s) refreshed ({} rows), {} removed, {} up to date",
            self.refreshed, self.rows, self.removed, self.unchanged
        )
    }
}

/// One materialized view with its size and freshness; the numbers are `None` while its
/// base table cannot be read.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupSummary {
    /// `database.name`.
    pub name: String,
    /// `database.table`.
    pub base_table: String,
    pub rows: Option<i64>,
    pub bytes: Option<i64>,
    pub partitions: Option<i64>,
    pub stale_partitions: Option<i64>,
    /// RFC 3339.
    pub refreshed_at: Option<String>,
    /// The `CREATE MATERIALIZED VIEW` statement.
    pub definition: String,
    /// When and why its last refresh failed (queries read its base meanwhile).
    pub last_error: Option<String>,
}

/// The schema of `SHOW MATERIALIZED VIEWS`.
pub fn show_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("base_table", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, true),
        Field::new("bytes", DataType::Int64, true),
        Field::new("partitions", DataType::Int64, true),
        Field::new("stale_partitions", DataType::Int64, true),
        Field::new("refreshed_at", DataType::Utf8, true),
        Field::new("definition", DataType::Utf8, true),
        Field::new("last_error", DataType::Utf8, true),
    ]))
}

/// A base table's files grouped by the first `depth` partition values.
pub(crate) fn groups(
    base: &CatalogTable,
    depth: usize,
) -> HashMap<Vec<ScalarValue>, Vec<&ObjectMeta>> {
    let mut out: HashMap<Vec<ScalarValue>, Vec<&ObjectMeta>> = HashMap::new();
    for (key, files) in base.partition_files() {
        out.entry(key[..depth.min(key.len())].to_vec())
            .or_default()
            .extend(files);
    }
    out
}

pub(crate) fn typed(
    values: &[Option<String>],
    types: &[crate::catalog::PartitionType],
) -> Vec<ScalarValue> {
    types
        .iter()
        .enumerate()
        .map(|(k, t)| partition_scalar(values.get(k).and_then(|v| v.as_deref()), *t))
        .collect()
}

/// `p1 = v1 AND p2 = v2 …` for one partition (`IS NULL` for a NULL value).
pub(crate) fn partition_predicate(columns: &[PartitionColumn], key: &[ScalarValue]) -> Expr {
    let terms = columns.iter().zip(key).map(|(c, v)| {
        if v.is_null() {
            column(&c.name).is_null()
        } else {
            column(&c.name).eq(Expr::Literal(v.clone(), None))
        }
    });
    datafusion::logical_expr::utils::conjunction(terms).unwrap_or_else(|| lit(true))
}

/// Computes the rollup rows of a group of base partitions, grouped by the dimensions and
/// the partition columns.
pub(crate) async fn compute(
    ctx: &SessionContext,
    def: &RollupDef,
    partition_columns: &[PartitionColumn],
    group: &[StalePartition],
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let base = TableReference::full(
        CATALOG_NAME,
        def.base_database.as_str(),
        def.base_table.as_str(),
    );
    let mut df = ctx.table(base).await.map_err(Error::from)?;
    if let Some(filter) = &def.filter {
        let expr = df.parse_sql_expr(filter).map_err(Error::from)?;
        df = df.filter(expr).map_err(Error::from)?;
    }
    if !partition_columns.is_empty() {
        let which = datafusion::logical_expr::utils::disjunction(
            group
                .iter()
                .map(|(key, _, _)| partition_predicate(partition_columns, key)),
        );
        if let Some(which) = which {
            df = df.filter(which).map_err(Error::from)?;
        }
    }
    let mut keys: Vec<Expr> = def
        .dimensions
        .iter()
        .map(|d| dimension_expr(d).alias(&d.name))
        .collect();
    keys.extend(
        partition_columns
            .iter()
            .map(|c| col(Column::new_unqualified(&c.name))),
    );
    let aggregates: Vec<Expr> = def
        .measures
        .iter()
        .map(|m| measure_expr(m).alias(m.storage_name()))
        .collect();
    let df = df.aggregate(keys, aggregates).map_err(Error::from)?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    Ok((schema, df.collect().await.map_err(Error::from)?))
}

/// The rows of `batches` in the partition `key`, without the partition columns.
pub(crate) fn rows_of(
    batches: &[RecordBatch],
    partition_columns: &[PartitionColumn],
    key: &[ScalarValue],
) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for batch in batches {
        let schema = batch.schema();
        let mut keep: Vec<u32> = Vec::new();
        let partition_arrays = partition_columns
            .iter()
            .map(|c| {
                let i = schema.index_of(&c.name)?;
                cast(batch.column(i), &c.data_type.arrow_type())
            })
            .collect::<std::result::Result<Vec<ArrayRef>, arrow::error::ArrowError>>()?;
        for row in 0..batch.num_rows() {
            let mut matches = true;
            for (array, want) in partition_arrays.iter().zip(key) {
                let value = ScalarValue::try_from_array(array, row).map_err(Error::from)?;
                if &value != want {
                    matches = false;
                    break;
                }
            }
            if matches {
                keep.push(row as u32);
            }
        }
        if keep.is_empty() {
            continue;
        }
        let data_columns: Vec<usize> = (0..schema.fields().len())
            .filter(|i| {
                !partition_columns
                    .iter()
                    .any(|c| c.name == *schema.field(*i).name())
            })
            .collect();
        let projected = batch.project(&data_columns)?;
        out.push(take_record_batch(&projected, &UInt32Array::from(keep))?);
    }
    Ok(out)
}

/// The schema of a rollup's storage files: dimensions and measures, in plain types.
pub(crate) fn file_schema(result: &SchemaRef, def: &RollupDef) -> SchemaRef {
    let fields: Vec<Field> = result
        .fields()
        .iter()
        .filter(|f| {
            def.dimensions.iter().any(|d| &d.name == f.name())
                || def.measures.iter().any(|m| &m.storage_name() == f.name())
        })
        .map(|f| Field::new(f.name(), plain(f.data_type()), true))
        .collect();
    Arc::new(Schema::new(fields))
}

pub(crate) fn plain(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::Dictionary(_, v) => plain(v),
        other => other.clone(),
    }
}

/// Casts a batch's columns to the storage schema (by name).
pub(crate) fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let i = batch.schema().index_of(f.name())?;
            cast(batch.column(i), f.data_type())
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// `<root>/k1=v1/k2=v2` for raw partition values.
pub(crate) fn partition_folder(
    location: &Location,
    columns: &[PartitionColumn],
    values: &[Option<String>],
) -> String {
    let mut parts: Vec<String> = location
        .prefix()
        .parts()
        .map(|p| p.as_ref().to_string())
        .collect();
    for (c, v) in columns.iter().zip(values) {
        let v = v.as_deref().unwrap_or(crate::crawler::layout::HIVE_NULL);
        parts.push(format!("{}={v}", c.name));
    }
    Path::from_iter(parts).to_string()
}

/// How long a replaced rollup file outlives its replacement (see [`crate::deferred`]).
pub use crate::deferred::DELETE_GRACE;

/// A rollup as the query rewrite sees it: its definition, storage, and which base
/// partitions it has not caught up with.
#[derive(Debug)]
pub struct RollupState {
    pub def: RollupDef,
    pub refreshed_at: Option<DateTime<Utc>>,
    /// The base table version this state was computed against.
    pub base_version: i64,
    pub base_partitions: usize,
    /// The storage table (none before the first refresh committed).
    pub storage: Option<Arc<CatalogTable>>,
    /// Base partitions whose rollup rows are missing or out of date.
    pub stale: Vec<Vec<ScalarValue>>,
    /// Storage partitions to leave out (out of date, or their base partition is gone).
    pub excluded: Vec<Vec<ScalarValue>>,
    pub partition_columns: Vec<PartitionColumn>,
    /// The definition's filter, analysed, as unqualified conjuncts.
    pub filter: Vec<Expr>,
    /// The storage's rows held in memory (small rollups), scanned instead of its files.
    pub memory: Option<Arc<datafusion::datasource::MemTable>>,
    /// The view itself, as a table users can query by name: its defining query (which the
    /// rewrite then answers from the storage).
    pub view: Option<Arc<dyn datafusion::catalog::TableProvider>>,
    /// Why its last refresh failed: until one succeeds, the rewrite leaves it alone.
    pub last_error: Option<String>,
}

impl RollupState {
    /// Whether, at `now`, the view is within its `max_staleness_seconds` of its last refresh,
    /// so its rows are served as they are.
    pub fn within_staleness_allowance(&self, now: DateTime<Utc>) -> bool {
        self.def.max_staleness_secs.is_some_and(|allowed| {
            self.refreshed_at.is_some_and(|at| {
                (now - at).num_seconds() <= i64::try_from(allowed).unwrap_or(i64::MAX)
            })
        })
    }

    /// Compares a rollup's storage with its base.
    pub(crate) fn new(
        record: &RollupRecord,
        base: &CatalogTable,
        storage: Option<Arc<CatalogTable>>,
        filter: Vec<Expr>,
    ) -> Self {
        let depth = record
            .definition
            .depth(base.entry().partition_columns.len());
        let comparison = Comparison::of(base, storage.as_deref(), depth);
        Self {
            def: record.definition.clone(),
            refreshed_at: record
                .refreshed_at
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
            base_version: base.entry().version,
            base_partitions: comparison.partitions,
            storage,
            stale: comparison.stale.into_iter().map(|(key, _)| key).collect(),
            excluded: comparison.excluded,
            partition_columns: base.entry().partition_columns[..depth].to_vec(),
            filter,
            memory: None,
            view: None,
            last_error: record.last_error.clone(),
        }
    }
}

/// Arrow memory a server spends by default on keeping rollups' rows in memory (all rollups
/// together; `--rollup-memory-mb`).
pub const MEMORY_BUDGET_MB: usize = 512;

/// Reads a rollup's storage into memory, split into `partitions` for parallel scans.
///
/// # Errors
/// Read errors; a storage larger than `limit` bytes of Arrow memory is `Ok(None)`.
pub(crate) async fn load_into_memory(
    ctx: &SessionContext,
    storage: Arc<CatalogTable>,
    partitions: usize,
    limit: usize,
) -> Result<Option<(Arc<datafusion::datasource::MemTable>, usize)>> {
    use datafusion::catalog::TableProvider;
    let schema = storage.schema();
    let batches = ctx
        .read_table(storage)
        .map_err(Error::from)?
        .collect()
        .await
        .map_err(Error::from)?;
    let mut bytes = 0;
    let mut split: Vec<Vec<RecordBatch>> = vec![Vec::new(); partitions.max(1)];
    for (i, batch) in batches.into_iter().enumerate() {
        let batch = conform(&batch, &schema)?;
        bytes += batch.get_array_memory_size();
        if bytes > limit {
            return Ok(None);
        }
        let n = split.len();
        split[i % n].push(batch);
    }
    let table = datafusion::datasource::MemTable::try_new(schema, split).map_err(Error::from)?;
    Ok(Some((Arc::new(table), bytes)))
}

/// A rollup's storage partitions against its base's, at the storage's partition depth.
pub(crate) struct Comparison {
    /// Base partitions whose stored rows are missing or out of date, with the fingerprint
    /// of their files now.
    pub stale: Vec<(Vec<ScalarValue>, String)>,
    /// Storage partitions not up to date (stale, or their base partition is gone).
    pub excluded: Vec<Vec<ScalarValue>>,
    /// Storage partitions whose base partition is gone.
    pub gone: Vec<Vec<ScalarValue>>,
    /// Base partitions (at the storage's depth).
    pub partitions: usize,
}

impl Comparison {
    pub(crate) fn of(base: &CatalogTable, storage: Option<&CatalogTable>, depth: usize) -> Self {
        let current = storage.map(storage_fingerprints).unwrap_or_default();
        let partitions = groups(base, depth);
        let mut stale = Vec::new();
        let mut fresh = std::collections::HashSet::new();
        for (key, files) in &partitions {
            let print = fingerprint(files.iter().copied());
            if current
                .get(key)
                .is_some_and(|p| p.as_deref() == Some(&print))
            {
                fresh.insert(key.clone());
            } else {
                stale.push((key.clone(), print));
            }
        }
        Self {
            stale,
            excluded: current
                .keys()
                .filter(|k| !fresh.contains(*k))
                .cloned()
                .collect(),
            gone: current
                .keys()
                .filter(|k| !partitions.contains_key(*k))
                .cloned()
                .collect(),
            partitions: partitions.len(),
        }
    }
}

/// Rollups by `(base database, base table)`.
pub type RollupIndex = BTreeMap<(String, String), Vec<Arc<RollupState>>>;
