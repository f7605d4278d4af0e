//! Probe rows that cannot find a partner are dropped before the hash join probes them.
//!
//! A hash join hashes every probe row and looks it up in the build side's table. When the
//! build side is a small, selective part of the key range (TPC-H Q8 probes 60 million
//! order lines with the 13,000 parts of one type), almost every lookup misses, and a miss
//! costs about as much as a hit: 10 to 15 ns a row on this project's benchmark machine,
//! most of a join's time. A bitmap of the build side's keys answers "no partner" for a
//! fraction of that.
//!
//! This rule runs after DataFusion's physical optimizer. For a hash join whose probe rows
//! without a partner cannot reach the output (inner, semi and anti joins, the build side's
//! mark join; not a null-aware anti join, whose answer depends on the probe side's nulls)
//! and that has an integer key on both sides, it wraps:
//!
//! - the build side in [`BuildKeysExec`], which passes the build side's batches on
//!   unchanged and notes each row's key. When the build side ends, before the join sees
//!   its end, it makes the keys into a [`KeySet`]: a bitmap over the keys' range where the
//!   range is at most [`MAX_BITS`] wide, otherwise a bitmap of hashes (a key whose hash
//!   is set may still have no partner; the join checks).
//! - the probe side in [`ProbeKeyFilterExec`], which drops rows whose key is null or not
//!   in the set, and gathers the rows it keeps into full batches.
//!
//! A hash join reads its probe side only after its build side has ended, so the key set is
//! there when the first probe batch arrives; should it not be (the build side had too many
//! rows to note), every probe row goes through. The filter watches the share of rows it
//! keeps over the first [`TRIAL_ROWS`] rows: when most rows have a partner, dropping the
//! rest saves less than it costs, and it lets every row through from then on. With the
//! join built once (`CollectLeft`), every probe partition uses the one key set; with the
//! join built per partition, each probe partition uses its own partition's.
//!
//! A join built per partition has its probe side hash-partitioned to match, and moving
//! every probe row between partitions (hashing it, copying each column) costs as much as
//! probing it. So a second filter goes below that `RepartitionExec`, where a row's
//! partition is not yet known: it keeps a row whose key is in any build partition's set
//! (the build side is partitioned by the same key, so that is the build side's key set),
//! and starts once every build partition has ended; rows that come earlier go through, and
//! the filter above the repartition drops them. A recursive query runs its plan again with
//! the same key sets, where a set of the previous step could be taken for this one's, so it
//! gets only the filters above.
//! `--datafusion-config tarn.probe_key_filter=false` turns the rule off.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use arrow::buffer::BooleanBuffer;
use arrow::compute::BatchCoalescer;
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, JoinType, NullEquality, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::recursive_query::RecursiveQueryExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{
    ChildStats, ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan,
    ExecutionPlanProperties, PlanProperties, ReplaceChildrenOptions, Statistics, StatisticsArgs,
};
use futures::{Stream, StreamExt};

use super::TarnOptions;

/// The widest key range kept as a bitmap of its own (8 MB); wider ranges, and the bitmap of
/// hashes, use at most this many bits.
pub const MAX_BITS: u64 = 1 << 26;

/// The most keys a build partition notes; a larger build side is probed as it is.
const MAX_KEYS: usize = 1 << 22;

/// Probe rows the filter counts before it decides whether to keep filtering.
pub const TRIAL_ROWS: usize = 1 << 16;

/// Children replaced by ones of the same properties.
const KEEP: ReplaceChildrenOptions = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep);

/// The rule; see the module documentation.
#[derive(Debug, Default)]
pub struct ProbeKeyFilter;

impl PhysicalOptimizerRule for ProbeKeyFilter {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !TarnOptions::get(config, |o| o.probe_key_filter) {
            return Ok(plan);
        }
        let recursive = plan.exists(|n| Ok(n.downcast_ref::<RecursiveQueryExec>().is_some()))?;
        plan.transform_up(|node| match with_key_filter(&node, !recursive)? {
            Some(rewritten) => Ok(Transformed::yes(rewritten)),
            None => Ok(Transformed::no(node)),
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "tarn_probe_key_filter"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The join with its build side noting keys and its probe side filtered by them, when the
/// join allows it; with `below_repartition`, also below the probe side's repartition.
fn with_key_filter(
    node: &Arc<dyn ExecutionPlan>,
    below_repartition: bool,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(join) = node.downcast_ref::<HashJoinExec>() else {
        return Ok(None);
    };
    let probe_rows_matter = !matches!(
        join.join_type(),
        JoinType::Inner
            | JoinType::LeftSemi
            | JoinType::LeftAnti
            | JoinType::RightSemi
            | JoinType::LeftMark
    );
    if probe_rows_matter
        || join.null_aware
        || join.null_equality() != NullEquality::NullEqualsNothing
        || join.right().downcast_ref::<ProbeKeyFilterExec>().is_some()
    {
        return Ok(None);
    }
    let sets = match join.partition_mode() {
        PartitionMode::CollectLeft => Sets::Shared,
        PartitionMode::Partitioned => Sets::Own,
        PartitionMode::Auto => return Ok(None),
    };
    let (left_schema, right_schema) = (join.left().schema(), join.right().schema());
    let mut key = None;
    for (build, probe) in join.on() {
        let build_type = build.data_type(&left_schema)?;
        if integer(&build_type) && build_type == probe.data_type(&right_schema)? {
            key = Some((Arc::clone(build), Arc::clone(probe)));
            break;
        }
    }
    let Some((build_key, probe_key)) = key else {
        return Ok(None);
    };
    let slots = Arc::new(Slots::new(
        join.left().output_partitioning().partition_count(),
    ));
    let build = Arc::new(BuildKeysExec {
        input: Arc::clone(join.left()),
        key: build_key,
        slots: Arc::clone(&slots),
    });
    let mut probe_input = Arc::clone(join.right());
    if below_repartition
        && matches!(sets, Sets::Own)
        && let Some(repartition) = probe_input.downcast_ref::<RepartitionExec>()
    {
        // The repartition passes its input's columns through, so the key reads the same.
        let below = Arc::new(ProbeKeyFilterExec {
            input: Arc::clone(repartition.input()),
            key: Arc::clone(&probe_key),
            slots: Arc::clone(&slots),
            sets: Sets::Any,
            metrics: ExecutionPlanMetricsSet::new(),
        });
        probe_input = Arc::clone(&probe_input).replace_children(vec![below], KEEP)?;
    }
    let probe = Arc::new(ProbeKeyFilterExec {
        input: probe_input,
        key: probe_key,
        slots,
        sets,
        metrics: ExecutionPlanMetricsSet::new(),
    });
    let rewritten = Arc::clone(node).replace_children(vec![build, probe], KEEP)?;
    Ok(Some(rewritten))
}

/// Integer types whose values convert to 64-bit integers one to one.
fn integer(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
    )
}

/// A key column's values as 64-bit integers.
fn as_i64(keys: &ArrayRef) -> Result<ArrayRef> {
    if keys.data_type() == &DataType::Int64 {
        return Ok(Arc::clone(keys));
    }
    Ok(arrow::compute::cast(keys, &DataType::Int64)?)
}

/// The build side's keys, as a set the probe side can test a key against. A key in the
/// set may have no partner (with hashes, two keys share a bit); a key not in it has none.
#[derive(Debug)]
pub struct KeySet {
    bits: Vec<u64>,
    map: KeyMap,
}

#[derive(Debug, Clone, Copy)]
enum KeyMap {
    /// Bit `k - min` for key `k`, over `len` bits.
    Range { min: i64, len: u64 },
    /// Bit `hash(k) >> shift`.
    Hashed { shift: u32 },
}

/// Multiplier of the hash (2^64 over the golden ratio): consecutive keys land far apart.
const HASH: u64 = 0x9E37_79B9_7F4A_7C15;

impl KeySet {
    /// The set of `keys`, with at most `max_bits` bits (a power of two).
    pub fn new(keys: &[i64], max_bits: u64) -> Self {
        let (Some(min), Some(max)) = (keys.iter().min(), keys.iter().max()) else {
            return Self {
                bits: Vec::new(),
                map: KeyMap::Range { min: 0, len: 0 },
            };
        };
        let range = (*max as i128 - *min as i128 + 1) as u128;
        let map = if range <= u128::from(max_bits) {
            KeyMap::Range {
                min: *min,
                len: range as u64,
            }
        } else {
            // About 16 bits a key: one key in 16 without a partner passes.
            let bits = (keys.len() as u64)
                .saturating_mul(16)
                .next_power_of_two()
                .clamp(1 << 10, max_bits.max(1 << 10));
            KeyMap::Hashed {
                shift: 64 - bits.trailing_zeros(),
            }
        };
        let len = match map {
            KeyMap::Range { len, .. } => len,
            KeyMap::Hashed { shift } => 1u64 << (64 - shift),
        };
        let mut set = Self {
            bits: vec![0; len.div_ceil(64) as usize],
            map,
        };
        for &k in keys {
            let bit = set.bit(k);
            if let Some(word) = set.bits.get_mut((bit >> 6) as usize) {
                *word |= 1 << (bit & 63);
            }
        }
        set
    }

    /// The bit of key `k` (for a range, out of range when `k` is).
    #[inline]
    fn bit(&self, k: i64) -> u64 {
        match self.map {
            KeyMap::Range { min, .. } => k.wrapping_sub(min) as u64,
            KeyMap::Hashed { shift } => (k as u64).wrapping_mul(HASH) >> shift,
        }
    }

    /// Whether `k` may have a partner: the test [`KeySet::mask`] makes of each row.
    #[cfg(test)]
    fn contains(&self, k: i64) -> bool {
        let bit = self.bit(k);
        if let KeyMap::Range { len, .. } = self.map
            && bit >= len
        {
            return false;
        }
        self.bits
            .get((bit >> 6) as usize)
            .is_some_and(|word| word >> (bit & 63) & 1 == 1)
    }

    /// Which of `keys` may have a partner: never a null. The same test as
    /// [`KeySet::contains`], with the choice of map made once per batch.
    fn mask(&self, keys: &ArrayRef) -> Result<BooleanArray> {
        let keys = as_i64(keys)?;
        let keys = keys.as_primitive::<Int64Type>();
        let values: &[i64] = keys.values();
        let bits = self.bits.as_slice();
        let set = |bit: u64| {
            bits.get((bit >> 6) as usize)
                .is_some_and(|word| word >> (bit & 63) & 1 == 1)
        };
        let found = match self.map {
            KeyMap::Range { min, len } => BooleanBuffer::collect_bool(values.len(), |i| {
                let bit = values[i].wrapping_sub(min) as u64;
                bit < len && set(bit)
            }),
            KeyMap::Hashed { shift } => BooleanBuffer::collect_bool(values.len(), |i| {
                set((values[i] as u64).wrapping_mul(HASH) >> shift)
            }),
        };
        let found = match keys.nulls() {
            Some(nulls) => &found & nulls.inner(),
            None => found,
        };
        Ok(BooleanArray::new(found, None))
    }
}

/// A build partition's key set, counted in the memory pool while it lives.
#[derive(Debug)]
struct Noted {
    keys: KeySet,
    _reservation: MemoryReservation,
}

/// One key set per build partition, set when that partition's build side ends.
#[derive(Debug)]
struct Slots(Vec<Mutex<Option<Arc<Noted>>>>);

impl Slots {
    fn new(partitions: usize) -> Self {
        Self((0..partitions).map(|_| Mutex::new(None)).collect())
    }

    /// Sets partition `p`'s key set (`None` clears it). A poisoned slot stays empty, which
    /// only turns the filter off.
    fn set(&self, p: usize, keys: Option<Arc<Noted>>) {
        if let Some(Ok(mut slot)) = self.0.get(p).map(Mutex::lock) {
            *slot = keys;
        }
    }

    fn get(&self, p: usize) -> Option<Arc<Noted>> {
        self.0.get(p)?.lock().ok()?.clone()
    }

    /// Every partition's key set, once all are set.
    fn all(&self) -> Option<Vec<Arc<Noted>>> {
        (0..self.0.len()).map(|p| self.get(p)).collect()
    }
}

/// Which build partitions' key sets a probe partition tests its rows against.
#[derive(Debug, Clone, Copy)]
enum Sets {
    /// The one set of a join built once.
    Shared,
    /// Its own partition's.
    Own,
    /// All of them (below the probe side's repartition), once every one is set.
    Any,
}

/// The build side of a filtered join: its input's batches, unchanged, with each row's key
/// noted; see the module documentation.
#[derive(Debug)]
pub struct BuildKeysExec {
    input: Arc<dyn ExecutionPlan>,
    key: Arc<dyn PhysicalExpr>,
    slots: Arc<Slots>,
}

impl DisplayAs for BuildKeysExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "BuildKeysExec: key={}", self.key)
    }
}

impl ExecutionPlan for BuildKeysExec {
    fn name(&self) -> &str {
        "BuildKeysExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        f(&self.key)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = super::one_input(children, "BuildKeysExec")?;
        Ok(Arc::new(Self {
            input,
            key: Arc::clone(&self.key),
            slots: Arc::clone(&self.slots),
        }))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, KEEP)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        // A plan run again (a recursive query's step) notes its keys again.
        self.slots.set(partition, None);
        let reservation =
            MemoryConsumer::new(format!("BuildKeys[{partition}]")).register(context.memory_pool());
        let input = self.input.execute(partition, context)?;
        Ok(Box::pin(BuildKeysStream {
            schema: input.schema(),
            input,
            key: Arc::clone(&self.key),
            slots: Arc::clone(&self.slots),
            partition,
            noting: Some((Vec::new(), reservation)),
        }))
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(super::input_statistics(input_stats, &self.schema()))
    }
}

struct BuildKeysStream {
    schema: SchemaRef,
    input: SendableRecordBatchStream,
    key: Arc<dyn PhysicalExpr>,
    slots: Arc<Slots>,
    partition: usize,
    /// The keys so far and their memory; `None` once there are too many to note (or the
    /// memory pool has no room for them, or a key could not be read), and the probe side
    /// goes unfiltered.
    noting: Option<(Vec<i64>, MemoryReservation)>,
}

impl BuildKeysStream {
    fn note(&mut self, batch: &RecordBatch) {
        let Some((keys, reservation)) = self.noting.as_mut() else {
            return;
        };
        let column = self
            .key
            .evaluate(batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .and_then(|a| as_i64(&a));
        match column {
            Ok(column) if keys.len() + column.len() <= MAX_KEYS => {
                let column = column.as_primitive::<Int64Type>();
                match column.nulls() {
                    Some(_) => keys.extend(column.iter().flatten()),
                    None => keys.extend_from_slice(column.values()),
                }
                if reservation.try_resize(keys.capacity() * 8).is_err() {
                    self.noting = None;
                }
            }
            // The join evaluates the same key and reports the error.
            _ => self.noting = None,
        }
    }
}

impl Stream for BuildKeysStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.input.poll_next_unpin(cx);
        match &polled {
            Poll::Ready(Some(Ok(batch))) => self.note(batch),
            Poll::Ready(None) => {
                if let Some((keys, reservation)) = self.noting.take() {
                    let keys = KeySet::new(&keys, MAX_BITS);
                    if reservation.try_resize(keys.bits.len() * 8).is_ok() {
                        let noted = Noted {
                            keys,
                            _reservation: reservation,
                        };
                        self.slots.set(self.partition, Some(Arc::new(noted)));
                    }
                }
            }
            _ => {}
        }
        polled
    }
}

impl RecordBatchStream for BuildKeysStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

/// The probe side of a filtered join: its input's rows whose key may have a partner; see
/// the module documentation.
#[derive(Debug)]
pub struct ProbeKeyFilterExec {
    input: Arc<dyn ExecutionPlan>,
    key: Arc<dyn PhysicalExpr>,
    slots: Arc<Slots>,
    sets: Sets,
    metrics: ExecutionPlanMetricsSet,
}

impl DisplayAs for ProbeKeyFilterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ProbeKeyFilterExec: key={}", self.key)?;
        if let Sets::Any = self.sets {
            f.write_str(", sets=all build partitions")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ProbeKeyFilterExec {
    fn name(&self) -> &str {
        "ProbeKeyFilterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        f(&self.key)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = super::one_input(children, "ProbeKeyFilterExec")?;
        Ok(Arc::new(Self {
            input,
            key: Arc::clone(&self.key),
            slots: Arc::clone(&self.slots),
            sets: self.sets,
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, KEEP)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let schema = input.schema();
        Ok(Box::pin(ProbeKeyFilterStream {
            coalescer: BatchCoalescer::new(
                Arc::clone(&schema),
                context.session_config().batch_size(),
            ),
            schema,
            input,
            key: Arc::clone(&self.key),
            slots: Arc::clone(&self.slots),
            sets: self.sets,
            partition,
            state: Filtering::Unstarted,
            passed: None,
            ended: false,
            baseline: BaselineMetrics::new(&self.metrics, partition),
            dropped: MetricBuilder::new(&self.metrics).counter("rows_dropped", partition),
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    /// The input's statistics, no longer exact: the filter drops rows the join would.
    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        let input = super::input_statistics(input_stats, &self.schema());
        Ok(Arc::new(input.as_ref().clone().to_inexact()))
    }
}

/// Where a probe stream's filter stands.
enum Filtering {
    /// No batch yet.
    Unstarted,
    /// Counting the rows in and kept, up to [`TRIAL_ROWS`] rows in.
    Trial {
        keys: Arc<[Arc<Noted>]>,
        rows_in: usize,
        kept: usize,
    },
    /// Filtering every batch.
    On(Arc<[Arc<Noted>]>),
    /// Letting every row through.
    Off,
}

struct ProbeKeyFilterStream {
    schema: SchemaRef,
    input: SendableRecordBatchStream,
    key: Arc<dyn PhysicalExpr>,
    slots: Arc<Slots>,
    sets: Sets,
    partition: usize,
    state: Filtering,
    /// Kept rows, gathered into full batches.
    coalescer: BatchCoalescer,
    /// A batch let through whole, sent after the gathered rows before it.
    passed: Option<RecordBatch>,
    ended: bool,
    baseline: BaselineMetrics,
    dropped: Count,
}

impl ProbeKeyFilterStream {
    /// The key sets to test rows against, when they are there. Below a repartition, until
    /// every build partition has ended, rows go through and the next batch asks again;
    /// otherwise a missing set turns the filter off.
    fn start(&mut self) {
        let keys: Option<Arc<[Arc<Noted>]>> = match self.sets {
            Sets::Shared => self.slots.get(0).map(|k| Arc::from([k])),
            Sets::Own => self.slots.get(self.partition).map(|k| Arc::from([k])),
            Sets::Any => match self.slots.all() {
                Some(all) => Some(Arc::from(all)),
                None => return,
            },
        };
        self.state = match keys {
            Some(keys) => Filtering::Trial {
                keys,
                rows_in: 0,
                kept: 0,
            },
            None => Filtering::Off,
        };
    }

    /// Takes in one input batch.
    fn push(&mut self, batch: RecordBatch) -> Result<()> {
        if let Filtering::Unstarted = self.state {
            self.start();
        }
        let keys = match &self.state {
            Filtering::Trial { keys, .. } | Filtering::On(keys) => Arc::clone(keys),
            Filtering::Unstarted | Filtering::Off => {
                self.passed = Some(batch);
                return Ok(());
            }
        };
        let column = self.key.evaluate(&batch)?.into_array(batch.num_rows())?;
        let mut mask = None::<BooleanBuffer>;
        for set in keys.iter() {
            let found = set.keys.mask(&column)?.into_parts().0;
            mask = Some(match mask {
                Some(m) => &m | &found,
                None => found,
            });
        }
        let mask = BooleanArray::new(
            mask.unwrap_or_else(|| BooleanBuffer::new_unset(column.len())),
            None,
        );
        let kept = mask.true_count();
        let rows = batch.num_rows();
        self.dropped.add(rows - kept);
        if kept > 0 {
            self.coalescer.push_batch_with_filter(batch, &mask)?;
        }
        if let Filtering::Trial {
            rows_in, kept: k, ..
        } = &mut self.state
        {
            *rows_in += rows;
            *k += kept;
            if *rows_in >= TRIAL_ROWS {
                // Keep filtering while it drops most rows.
                self.state = if *k * 2 <= *rows_in {
                    Filtering::On(keys)
                } else {
                    self.coalescer.finish_buffered_batch()?;
                    Filtering::Off
                };
            }
        }
        Ok(())
    }
}

impl Stream for ProbeKeyFilterStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(batch) = self.coalescer.next_completed_batch() {
                return self.baseline.record_poll(Poll::Ready(Some(Ok(batch))));
            }
            if let Some(batch) = self.passed.take() {
                return self.baseline.record_poll(Poll::Ready(Some(Ok(batch))));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            let polled = match self.input.poll_next_unpin(cx) {
                Poll::Ready(polled) => polled,
                Poll::Pending => return Poll::Pending,
            };
            let elapsed = self.baseline.elapsed_compute().clone();
            let timer = elapsed.timer();
            let pushed = match polled {
                Some(Ok(batch)) => self.push(batch),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    self.ended = true;
                    self.coalescer
                        .finish_buffered_batch()
                        .map_err(DataFusionError::from)
                }
            };
            timer.done();
            if let Err(e) = pushed {
                return Poll::Ready(Some(Err(e)));
            }
        }
    }
}

impl RecordBatchStream for ProbeKeyFilterStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

// In these tests a failing step panics (`expect` names the step), which is how a test fails.
#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionState;
    use datafusion::execution::memory_pool::{MemoryPool, UnboundedMemoryPool};
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::physical_plan::{collect, displayable};
    use datafusion::prelude::SessionContext;

    #[test]
    fn a_range_holds_exactly_its_keys() {
        let keys = [5, 9, 1_000, -3, 9];
        let set = KeySet::new(&keys, MAX_BITS);
        assert!(matches!(
            set.map,
            KeyMap::Range {
                min: -3,
                len: 1_004
            }
        ));
        for k in -10..1_100 {
            assert_eq!(set.contains(k), keys.contains(&k), "key {k}");
        }
        assert!(!set.contains(i64::MIN) && !set.contains(i64::MAX));
    }

    #[test]
    fn hashes_keep_every_key_and_few_others() {
        let keys: Vec<i64> = (0..1_000).map(|i| i * 1_000_003 - 7_000_000).collect();
        let set = KeySet::new(&keys, 1 << 20);
        assert!(matches!(set.map, KeyMap::Hashed { .. }));
        assert!(keys.iter().all(|&k| set.contains(k)));
        let others = (0..100_000).filter(|&k| set.contains(k * 7 + 1)).count();
        // About one key in 16 of the ones without a partner passes.
        assert!(others < 100_000 / 8, "{others} of 100,000 passed");
        let probe: Vec<i64> = (0..10_000).map(|k| k * 1_000_003 - 7_000_000).collect();
        let column: ArrayRef = Arc::new(Int64Array::from(probe.clone()));
        let mask = set.mask(&column).expect("mask");
        let expected: Vec<bool> = probe.iter().map(|&k| set.contains(k)).collect();
        assert_eq!(mask.values().iter().collect::<Vec<_>>(), expected);
        let extremes = KeySet::new(&[i64::MIN, i64::MAX], MAX_BITS);
        assert!(extremes.contains(i64::MIN) && extremes.contains(i64::MAX));
    }

    #[test]
    fn no_keys_let_nothing_through() {
        let set = KeySet::new(&[], MAX_BITS);
        assert!(!set.contains(0) && !set.contains(-1));
        let column: ArrayRef = Arc::new(Int32Array::from(vec![Some(0), None, Some(3)]));
        assert_eq!(set.mask(&column).expect("mask").true_count(), 0);
    }

    #[test]
    fn nulls_never_pass() {
        let set = KeySet::new(&[1, 2, 3], MAX_BITS);
        let column: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(4), Some(3)]));
        let mask = set.mask(&column).expect("mask");
        assert_eq!(
            mask.iter().collect::<Vec<_>>(),
            [Some(true), Some(false), Some(false), Some(true)]
        );
    }

    /// `facts(k, v)`: `rows` rows over `distinct` keys (every 97th key null), in batches
    /// of 8,192 rows over 2 partitions; `dims(k, name)`: the keys `7, 1007, 2007, …` below `distinct`,
    /// and a null key.
    fn tables(ctx: &SessionContext, rows: i64, distinct: i64, dims_every: i64) {
        let facts = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Int64, false),
        ]));
        let batch = |from: i64, to: i64| {
            let k: Int64Array = (from..to)
                .map(|i| (i % 97 != 0).then_some(i * 7919 % distinct))
                .collect();
            let v: Int64Array = (from..to).collect();
            RecordBatch::try_new(Arc::clone(&facts), vec![Arc::new(k), Arc::new(v)])
                .expect("facts batch")
        };
        let half = rows / 2;
        let batches = |from: i64, to: i64| {
            (from..to)
                .step_by(8_192)
                .map(|b| batch(b, (b + 8_192).min(to)))
                .collect::<Vec<_>>()
        };
        let parts = vec![batches(0, half), batches(half, rows)];
        let table = MemTable::try_new(Arc::clone(&facts), parts).expect("facts");
        ctx.register_table("facts", Arc::new(table))
            .expect("register facts");
        let dims = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("name", DataType::Utf8, false),
        ]));
        let keys: Int64Array = (0..distinct / dims_every)
            .map(|i| Some(i * dims_every + 7))
            .chain([None])
            .collect();
        let names: StringArray = (0..keys.len()).map(|i| Some(format!("d{i}"))).collect();
        let batch = RecordBatch::try_new(Arc::clone(&dims), vec![Arc::new(keys), Arc::new(names)])
            .expect("dims batch");
        let table = MemTable::try_new(dims, vec![vec![batch]]).expect("dims");
        ctx.register_table("dims", Arc::new(table))
            .expect("register dims");
    }

    /// What a run of `sql` returned, the plan as shown, and the probe rows the filters
    /// dropped (all of them, and those below a repartition).
    struct Run {
        rows: Vec<String>,
        plan: String,
        dropped: usize,
        dropped_below: usize,
    }

    async fn run(filter: bool, partitioned: bool, dims_every: i64, sql: &str) -> Run {
        let mut state = crate::test_state(2, |o| o.probe_key_filter = filter).build();
        if partitioned {
            let options = state.config_mut().options_mut();
            options.optimizer.hash_join_single_partition_threshold = 0;
            options.optimizer.hash_join_single_partition_threshold_rows = 0;
        }
        run_in(state, dims_every, sql).await
    }

    async fn run_in(state: SessionState, dims_every: i64, sql: &str) -> Run {
        let ctx = SessionContext::new_with_state(state);
        tables(&ctx, 200_000, 100_000, dims_every);
        let plan = ctx
            .sql(sql)
            .await
            .expect("sql")
            .create_physical_plan()
            .await
            .expect("plan");
        let batches = collect(Arc::clone(&plan), ctx.task_ctx())
            .await
            .expect("run");
        let (mut dropped, mut dropped_below) = (0, 0);
        plan.apply(|node| {
            if let Some(filter) = node.downcast_ref::<ProbeKeyFilterExec>() {
                let metrics = node.metrics().expect("metrics");
                let rows = metrics
                    .sum_by_name("rows_dropped")
                    .map_or(0, |m| m.as_usize());
                dropped += rows;
                if let Sets::Any = filter.sets {
                    dropped_below += rows;
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .expect("walk");
        let shown = arrow::util::pretty::pretty_format_batches(&batches).expect("format");
        Run {
            rows: shown.to_string().lines().map(str::to_string).collect(),
            plan: displayable(plan.as_ref()).indent(true).to_string(),
            dropped,
            dropped_below,
        }
    }

    /// `sql` answers the same with the rule and without; returns the run with it.
    async fn same_answer(partitioned: bool, dims_every: i64, sql: &str) -> Run {
        let with = run(true, partitioned, dims_every, sql).await;
        let without = run(false, partitioned, dims_every, sql).await;
        assert_eq!(with.rows, without.rows, "{sql}\n{}", with.plan);
        assert!(!without.plan.contains("ProbeKeyFilterExec"));
        assert!(with.rows.len() > 4, "{:?}", with.rows);
        with
    }

    const JOIN: &str = "SELECT d.name, count(*), sum(f.v) FROM facts f JOIN dims d ON f.k = d.k \
                        GROUP BY d.name ORDER BY d.name";

    #[tokio::test]
    async fn a_selective_join_drops_probe_rows_and_answers_the_same() {
        for partitioned in [false, true] {
            let run = same_answer(partitioned, 1_000, JOIN).await;
            assert!(
                run.plan.contains("ProbeKeyFilterExec: key=k@0"),
                "{}",
                run.plan
            );
            assert!(run.plan.contains("BuildKeysExec: key=k@0"), "{}", run.plan);
            // 100 of 100,000 keys have a partner: nearly every probe row is dropped.
            assert!(run.dropped > 190_000, "dropped {}", run.dropped);
            // Built per partition: a filter below the probe side's repartition drops rows
            // before they are moved (those arriving before every build partition ended
            // go through to the filter above).
            let below = run.plan.contains("sets=all build partitions");
            assert_eq!(below, partitioned, "{}", run.plan);
            assert_eq!(run.dropped_below > 0, partitioned, "{}", run.dropped_below);
        }
    }

    #[tokio::test]
    async fn a_recursive_query_gets_no_filter_below_a_repartition() {
        // Each step joins the last step's rows with the facts: the plan runs once a step,
        // with the same key sets, so only the filters that wait for their own build
        // partition are safe.
        let sql = "WITH RECURSIVE r(k, n) AS ( \
                       SELECT k, 0 FROM dims WHERE k < 5000 \
                       UNION ALL \
                       SELECT f.k, r.n + 1 FROM r JOIN facts f ON f.k = r.k + 1000 \
                       WHERE r.n < 3) \
                   SELECT n, count(*), sum(k) FROM r GROUP BY n ORDER BY n";
        let with = run(true, true, 1_000, sql).await;
        let without = run(false, true, 1_000, sql).await;
        assert_eq!(with.rows, without.rows, "{}", with.plan);
        assert!(with.plan.contains("ProbeKeyFilterExec"), "{}", with.plan);
        assert!(!with.plan.contains("sets=all"), "{}", with.plan);
        // Steps 0 to 3, each with rows.
        assert_eq!(with.rows.len(), 4 + 4, "{:?}", with.rows);
    }

    #[tokio::test]
    async fn semi_and_anti_joins_answer_the_same() {
        let semi = "SELECT count(*), sum(v) FROM facts WHERE k IN (SELECT k FROM dims)";
        let run = same_answer(false, 1_000, semi).await;
        assert!(run.dropped > 190_000, "dropped {}", run.dropped);
        let anti = "SELECT d.name FROM dims d WHERE NOT EXISTS \
                    (SELECT 1 FROM facts f WHERE f.k = d.k AND f.v % 3 = 0) ORDER BY d.name";
        same_answer(false, 1_000, anti).await;
    }

    #[tokio::test]
    async fn joins_whose_unmatched_probe_rows_count_are_left_alone() {
        // `NOT IN` is a null-aware anti join: a null among the probe side's keys empties
        // the answer.
        let not_in = "SELECT d.name FROM dims d WHERE d.k NOT IN (SELECT k FROM facts) \
                      ORDER BY d.name";
        let with = run(true, false, 1_000, not_in).await;
        assert!(!with.plan.contains("ProbeKeyFilterExec"), "{}", with.plan);
        assert_eq!(with.rows, run(false, false, 1_000, not_in).await.rows);
        let outer = "SELECT count(*), count(d.name) FROM facts f LEFT JOIN dims d ON f.k = d.k";
        let run = run_outer(outer).await;
        assert!(!run.plan.contains("ProbeKeyFilterExec"), "{}", run.plan);
    }

    async fn run_outer(sql: &str) -> Run {
        let with = run(true, false, 1_000, sql).await;
        let without = run(false, false, 1_000, sql).await;
        assert_eq!(with.rows, without.rows);
        with
    }

    /// A memory pool with no room for the build side's keys (and room for the rest).
    #[derive(Debug)]
    struct NoRoomForKeys(UnboundedMemoryPool);

    impl fmt::Display for NoRoomForKeys {
        fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("no room for keys")
        }
    }

    impl MemoryPool for NoRoomForKeys {
        fn name(&self) -> &str {
            "no room for keys"
        }

        fn grow(&self, reservation: &MemoryReservation, additional: usize) {
            self.0.grow(reservation, additional)
        }

        fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
            self.0.shrink(reservation, shrink)
        }

        fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
            if reservation.consumer().name().starts_with("BuildKeys") {
                return datafusion::common::resources_err!("no room for keys");
            }
            self.0.try_grow(reservation, additional)
        }

        fn reserved(&self) -> usize {
            self.0.reserved()
        }
    }

    #[tokio::test]
    async fn keys_without_room_in_the_memory_pool_leave_the_probe_side_unfiltered() {
        let pool = Arc::new(NoRoomForKeys(UnboundedMemoryPool::default()));
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(pool)
            .build_arc()
            .expect("runtime");
        let state = crate::test_state(2, |_| {})
            .with_runtime_env(runtime)
            .build();
        let starved = run_in(state, 1_000, JOIN).await;
        assert!(
            starved.plan.contains("ProbeKeyFilterExec"),
            "{}",
            starved.plan
        );
        assert_eq!(starved.dropped, 0);
        assert_eq!(starved.rows, run(false, false, 1_000, JOIN).await.rows);
    }

    #[tokio::test]
    async fn a_join_most_rows_pass_stops_filtering() {
        // Keys 7 and up have a partner: only nulls and keys 0 to 6 have none.
        let run = same_answer(false, 1, JOIN).await;
        assert!(run.plan.contains("ProbeKeyFilterExec"), "{}", run.plan);
        let unmatched = (0..200_000i64)
            .filter(|i| i % 97 == 0 || i * 7919 % 100_000 < 7)
            .count();
        // Each probe partition (100,000 rows) filters only its trial, which ends with the
        // batch that reaches TRIAL_ROWS rows.
        assert!(run.dropped > 0, "dropped {}", run.dropped);
        assert!(
            run.dropped * 10 < unmatched * 8,
            "dropped {} of {unmatched}",
            run.dropped
        );
    }
}
