//! One-phase aggregation where the catalog's statistics prove that no group spans two
//! partitions.
//!
//! DataFusion aggregates in two phases: every partition aggregates the rows it reads,
//! the partial results are hash-partitioned on the grouping keys, and a final phase
//! merges them. When the files of a table hold disjoint ranges of a grouping column (a
//! table written in key order, such as order lines by order number, or a Hive
//! partition column), the second phase is wasted work: with the files split into
//! partitions by range, each group's rows are all read by one partition, so one
//! aggregation per partition is already final. For an aggregation into many groups the
//! final phase costs about as much as the first (TPC-H Q18 sums 60 million lines into 15
//! million orders).
//!
//! This rule runs after DataFusion's physical optimizer. It finds a final aggregation
//! over a hash repartition of a partial aggregation whose input is a Parquet scan reached
//! through projections and filters only, and a grouping column that is a column of that
//! scan. It orders the scan's files by their minimum of that column (from the catalog)
//! and cuts them into groups at points where every file before the cut ends below every
//! file after it, with group sizes within a quarter of an even split. It makes the groups
//! as small as the cuts allow (up to one per file, at most [`MAX_GROUPS_PER_PARTITION`]
//! per target partition, and never fewer than the scan had partitions): each group is
//! aggregated in its own hash table, and the smaller the table, the more of it stays in
//! the CPU's caches as it grows (TPC-H Q18 at SF10: 20 groups took a quarter less time
//! than 2). When such cuts exist, the scan reads those groups and the two phases become
//! one (`SinglePartitioned`). The scan declares its partitioning, which stops
//! DataFusion's scan from letting a partition that runs out of files take another's (a key
//! in files of two partitions would become two groups). The hash repartition moves above
//! the aggregation (and above a filter that follows it, such as a `HAVING`), so the plan
//! above has the partitioning DataFusion planned. Otherwise the plan is left as it was.
//!
//! Only bounds that are true bounds count: integer, decimal and date columns' footer
//! ranges, and partition columns' values. Every file must report no nulls in that column
//! (nulls would form one group in several partitions).
//! `--datafusion-config tarn.one_phase_aggregates=false` turns the rule off.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig};
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ChildrenPropertiesMode, Partitioning, ReplaceChildrenOptions};

use super::TarnOptions;

/// Children replaced with the properties computed again.
const RECOMPUTE: ReplaceChildrenOptions =
    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);

/// How far the largest group may be above an even split of the bytes.
const MAX_SKEW: f64 = 1.25;

/// The most file groups per target partition. The groups' scans and aggregations all run
/// at once, so this bounds the scans in flight (each holds a row group's pages).
const MAX_GROUPS_PER_PARTITION: usize = 16;

/// The rule; see the module documentation.
#[derive(Debug, Default)]
pub struct OnePhaseAggregate;

impl PhysicalOptimizerRule for OnePhaseAggregate {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !TarnOptions::get(config, |o| o.one_phase_aggregates) {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            if let Some(rewritten) = one_phase(&node)? {
                return Ok(Transformed::yes(rewritten));
            }
            if let Some(swapped) = filter_below_repartition(&node)? {
                return Ok(Transformed::yes(swapped));
            }
            Ok(Transformed::no(node))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "tarn_one_phase_aggregate"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `Final ← Repartition(hash) ← Partial ← chain ← scan` as
/// `Repartition(hash) ← SinglePartitioned ← chain ← scan split by key ranges`, when a
/// grouping column's ranges allow the split.
fn one_phase(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(fin) = node.downcast_ref::<AggregateExec>() else {
        return Ok(None);
    };
    if *fin.mode() != AggregateMode::FinalPartitioned || fin.limit_options().is_some() {
        return Ok(None);
    }
    let Some(repartition) = fin.input().downcast_ref::<RepartitionExec>() else {
        return Ok(None);
    };
    let Partitioning::Hash(hash_exprs, out_partitions) = repartition.partitioning() else {
        return Ok(None);
    };
    if repartition.preserve_order() {
        return Ok(None);
    }
    let Some(partial) = repartition.input().downcast_ref::<AggregateExec>() else {
        return Ok(None);
    };
    if *partial.mode() != AggregateMode::Partial
        || partial.group_expr().has_grouping_set()
        || partial.group_expr().is_empty()
        || partial.limit_options().is_some()
    {
        return Ok(None);
    }
    // The columns the grouping reads, in the partial aggregation's input.
    let keys: Vec<usize> = partial
        .group_expr()
        .expr()
        .iter()
        .filter_map(|(e, _)| e.downcast_ref::<Column>().map(Column::index))
        .collect();
    let Some(regrouped) = split_below(partial.input(), &keys)? else {
        return Ok(None);
    };
    let single = AggregateExec::try_new(
        AggregateMode::SinglePartitioned,
        Arc::new(partial.group_expr().clone()),
        partial.aggr_expr().to_vec(),
        partial.filter_expr().to_vec(),
        regrouped,
        partial.input_schema(),
    )?;
    if single.schema() != fin.schema() {
        return Ok(None);
    }
    let repartitioned = RepartitionExec::try_new(
        Arc::new(single),
        Partitioning::Hash(hash_exprs.clone(), *out_partitions),
    )?;
    Ok(Some(Arc::new(repartitioned)))
}

/// `plan` (a chain of projections and filters over a Parquet scan) with the scan's files
/// regrouped by the ranges of one of `keys` (columns of `plan`'s output), or `None`.
fn split_below(
    plan: &Arc<dyn ExecutionPlan>,
    keys: &[usize],
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if let Some(scan) = plan.downcast_ref::<DataSourceExec>() {
        let Some(config) = scan.data_source().downcast_ref::<FileScanConfig>() else {
            return Ok(None);
        };
        return Ok(regroup(config, keys).map(|c| DataSourceExec::from_data_source(c) as _));
    }
    let mapped: Vec<usize> = if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        keys.iter()
            .filter_map(|k| {
                projection
                    .expr()
                    .get(*k)
                    .and_then(|p| p.expr.downcast_ref::<Column>().map(Column::index))
            })
            .collect()
    } else if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        match filter.projection() {
            Some(p) => keys.iter().filter_map(|k| p.get(*k).copied()).collect(),
            None => keys.to_vec(),
        }
    } else if plan.is::<CooperativeExec>() {
        keys.to_vec()
    } else {
        return Ok(None);
    };
    let [child] = plan.children()[..] else {
        return Ok(None);
    };
    match split_below(child, &mapped)? {
        Some(new_child) => Ok(Some(
            Arc::clone(plan).replace_children(vec![new_child], RECOMPUTE)?,
        )),
        None => Ok(None),
    }
}

/// A copy of `config` whose file groups hold disjoint ranges of one of `keys` (indices
/// into the scan's output), or `None`.
fn regroup(config: &FileScanConfig, keys: &[usize]) -> Option<FileScanConfig> {
    let partitions = config.file_groups.len();
    if partitions < 2 || config.output_partitioning.is_some() || config.limit.is_some() {
        return None;
    }
    // Every file once, whole (DataFusion may have split a file into byte ranges).
    // A set, not a scan of the list: a table may have thousands of files.
    let mut seen = HashSet::new();
    let mut files: Vec<PartitionedFile> = Vec::new();
    for file in config.file_groups.iter().flat_map(|g| g.iter()) {
        if seen.insert(&file.object_meta.location) {
            let mut whole = file.clone();
            whole.range = None;
            files.push(whole);
        }
    }
    if files.len() < partitions {
        return None;
    }
    let most = files
        .len()
        .min(partitions.saturating_mul(MAX_GROUPS_PER_PARTITION));
    let table = config.file_source.table_schema().table_schema();
    for key in keys {
        // The scan's output column `key`, as a column of the table.
        let column = match config.file_source().projection() {
            Some(projection) => projection
                .as_ref()
                .get(*key)?
                .expr
                .downcast_ref::<Column>()?
                .index(),
            None => *key,
        };
        let data_type = table.fields().get(column)?.data_type();
        let kind = KeyKind::of(column, config.file_schema().fields().len(), data_type);
        if matches!(kind, KeyKind::Untrusted) {
            continue;
        }
        let Some(cuts) = Cuts::of(&files, column, kind) else {
            continue;
        };
        // The most groups the cuts allow, halving the count down to the scan's
        // partitions until the groups are even enough.
        let mut counts = std::iter::successors(Some(most), |n| Some(n / 2))
            .take_while(|n| *n > partitions)
            .chain(std::iter::once(partitions));
        if let Some(groups) = counts.find_map(|count| cuts.groups(count)) {
            let partitions = groups.len();
            let mut regrouped = config.clone();
            regrouped.file_groups = groups;
            // A declared partitioning keeps each group's files in its partition: without
            // one, a partition that runs out of files takes another's, and a key in files
            // of two partitions would be two groups.
            regrouped.output_partitioning = Some(Partitioning::UnknownPartitioning(partitions));
            return Some(regrouped);
        }
    }
    None
}

/// A file's range of one column, when its statistics prove it: no nulls, and either a
/// partition column (one value per file, from its path) or a type whose footer ranges are
/// true bounds (integers, decimals, dates; strings may be truncated, floats have NaN).
fn range_of(file: &PartitionedFile, column: usize, key: KeyKind) -> Option<Bounds> {
    let stats = file.statistics.as_ref()?.column_statistics.get(column)?;
    if !matches!(stats.null_count.get_value(), Some(0)) {
        return None;
    }
    let exact = matches!(
        (&stats.min_value, &stats.max_value),
        (Precision::Exact(_), Precision::Exact(_))
    );
    if !(matches!(key, KeyKind::Bounded) || (matches!(key, KeyKind::Partition) && exact)) {
        return None;
    }
    let min = stats.min_value.get_value()?.clone();
    let max = stats.max_value.get_value()?.clone();
    (min.partial_cmp(&max)? != Ordering::Greater).then_some(Bounds { min, max })
}

/// What a grouping column's file statistics can be trusted for.
#[derive(Clone, Copy)]
enum KeyKind {
    /// A partition column: each file's value comes from its path.
    Partition,
    /// A file column of a type whose footer minimum and maximum are true bounds.
    Bounded,
    /// Any other column.
    Untrusted,
}

impl KeyKind {
    fn of(column: usize, file_columns: usize, data_type: &DataType) -> Self {
        if column >= file_columns {
            return KeyKind::Partition;
        }
        match data_type {
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Date32
            | DataType::Date64
            | DataType::Decimal128(_, _)
            | DataType::Decimal256(_, _) => KeyKind::Bounded,
            _ => KeyKind::Untrusted,
        }
    }
}

struct Bounds {
    min: ScalarValue,
    max: ScalarValue,
}

/// A table's files in ascending order of one column's ranges, and where they may be cut
/// into groups of disjoint ranges.
struct Cuts<'a> {
    /// The files, by their minimum of the column.
    ranged: Vec<&'a PartitionedFile>,
    /// (position, bytes before it): a cut may go before the file at `position`.
    cuts: Vec<(usize, u64)>,
    /// All the files' bytes (at least 1).
    total: u64,
}

impl<'a> Cuts<'a> {
    /// `files` ordered by their ranges of `column`, or `None` when a file's range is not
    /// known to be a true bound or two ranges do not compare.
    fn of(files: &'a [PartitionedFile], column: usize, kind: KeyKind) -> Option<Self> {
        let mut ranged: Vec<(Bounds, &PartitionedFile)> = files
            .iter()
            .map(|f| range_of(f, column, kind).map(|b| (b, f)))
            .collect::<Option<_>>()?;
        let mut comparable = true;
        ranged.sort_by(|(a, _), (b, _)| {
            a.min
                .partial_cmp(&b.min)
                .or_else(|| {
                    comparable = false;
                    None
                })
                .unwrap_or(Ordering::Equal)
        });
        if !comparable {
            return None;
        }
        // A cut may go before file i when every file before it ends below its minimum.
        let mut cuts: Vec<(usize, u64)> = Vec::new();
        let (first, _) = ranged.first()?;
        let mut highest = first.max.clone();
        let mut bytes = 0;
        for (i, (bounds, file)) in ranged.iter().enumerate() {
            if i > 0 {
                if highest.partial_cmp(&bounds.min)? == Ordering::Less {
                    cuts.push((i, bytes));
                }
                if bounds.max.partial_cmp(&highest)? == Ordering::Greater {
                    highest = bounds.max.clone();
                }
            }
            bytes += file.object_meta.size;
        }
        Some(Cuts {
            ranged: ranged.into_iter().map(|(_, f)| f).collect(),
            cuts,
            total: bytes.max(1),
        })
    }

    /// The files cut into `count` groups (at least 2) of ascending, disjoint ranges, their
    /// sizes within [`MAX_SKEW`] of an even split, or `None`.
    fn groups(&self, count: usize) -> Option<Vec<FileGroup>> {
        let (cuts, total) = (&self.cuts, self.total as f64);
        // For each even-split target, the nearest cut after the previous one.
        let mut chosen: Vec<usize> = Vec::with_capacity(count - 1);
        let mut next = 0;
        for k in 1..count {
            let target = total * k as f64 / count as f64;
            let remaining = count - 1 - k;
            let candidates = cuts.get(next..cuts.len().checked_sub(remaining)?)?;
            let (offset, _) = candidates.iter().enumerate().min_by(|(_, a), (_, b)| {
                (a.1 as f64 - target)
                    .abs()
                    .total_cmp(&(b.1 as f64 - target).abs())
            })?;
            chosen.push(cuts[next + offset].0);
            next += offset + 1;
        }
        let mut groups = Vec::with_capacity(count);
        let mut start = 0;
        for end in chosen.into_iter().chain(std::iter::once(self.ranged.len())) {
            let group: Vec<PartitionedFile> = self.ranged[start..end]
                .iter()
                .map(|f| (*f).clone())
                .collect();
            let size: u64 = group.iter().map(|f| f.object_meta.size).sum();
            if group.is_empty() || size as f64 > MAX_SKEW * total / count as f64 {
                return None;
            }
            groups.push(FileGroup::new(group));
            start = end;
        }
        Some(groups)
    }
}

/// `Filter ← Repartition(hash) ← SinglePartitioned aggregation` (as [`one_phase`] left
/// it) as `Repartition(hash) ← Filter ← …`, so only the rows the filter keeps move.
fn filter_below_repartition(
    node: &Arc<dyn ExecutionPlan>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(filter) = node.downcast_ref::<FilterExec>() else {
        return Ok(None);
    };
    let Some(repartition) = filter.input().downcast_ref::<RepartitionExec>() else {
        return Ok(None);
    };
    let Partitioning::Hash(exprs, n) = repartition.partitioning() else {
        return Ok(None);
    };
    let below_is_ours = repartition
        .input()
        .downcast_ref::<AggregateExec>()
        .is_some_and(|a| *a.mode() == AggregateMode::SinglePartitioned);
    // A filter with a row limit stays where it is: below, the limit would apply per input.
    if !below_is_ours || repartition.preserve_order() || filter.fetch().is_some() {
        return Ok(None);
    }
    // The hash columns, as columns of the filter's output.
    let mut mapped: Vec<Arc<dyn PhysicalExpr>> = Vec::with_capacity(exprs.len());
    for expr in exprs {
        let Some(column) = expr.downcast_ref::<Column>() else {
            return Ok(None);
        };
        let index = match filter.projection() {
            Some(p) => match p.iter().position(|i| *i == column.index()) {
                Some(i) => i,
                None => return Ok(None),
            },
            None => column.index(),
        };
        mapped.push(Arc::new(Column::new(column.name(), index)));
    }
    let filtered =
        Arc::clone(node).replace_children(vec![Arc::clone(repartition.input())], RECOMPUTE)?;
    let moved = RepartitionExec::try_new(filtered, Partitioning::Hash(mapped, *n))?;
    Ok(Some(Arc::new(moved)))
}
