//! A subquery the query names more than once is computed once.
//!
//! DataFusion copies a common table expression (or a view, or a derived table) into every
//! place that names it. TPC-H Q15 names its revenue view twice, once to join it with the
//! suppliers and once for its maximum, so `lineitem` is scanned and aggregated twice.
//!
//! The analyzer rule [`ShareRepeatedSubplans`] finds subqueries whose plans are equal,
//! that appear more than once (scalar, `IN` and `EXISTS` subqueries included), and whose
//! result is an aggregation: small next to what it reads, and held in memory by the
//! aggregation anyway. Each copy is wrapped in a [`SharedSubplan`] node with the group's
//! id. Filters still pass into the copies (a filter on a grouping column still prunes
//! files); the columns do not (each copy keeps all its columns, so copies stay equal).
//!
//! When the plan is made physical, copies that are still equal after optimisation share
//! one slot: the first [`SharedSubplanExec`] to run computes the subquery's partitions in
//! a task of its own, holds the batches (counted against the memory pool), and every copy
//! replays them. A copy that a filter made different runs on its own, as before.
//! `--datafusion-config tarn.share_subplans=false` turns the rule off.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::config::ConfigOptions;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::common::{DFSchemaRef, DataFusionError, Result, internal_err};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Expr, Extension, LogicalPlan, SubqueryAlias, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildStats, ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan,
    ExecutionPlanProperties, PlanProperties, ReplaceChildrenOptions, Statistics, StatisticsArgs,
    collect_partitioned,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use futures::{StreamExt, TryStreamExt};

use super::TarnOptions;

/// The analyzer rule (see the module documentation).
#[derive(Debug, Default)]
pub struct ShareRepeatedSubplans;

impl AnalyzerRule for ShareRepeatedSubplans {
    fn name(&self) -> &str {
        "tarn_share_repeated_subplans"
    }

    fn analyze(&self, plan: LogicalPlan, config: &ConfigOptions) -> Result<LogicalPlan> {
        let enabled = config
            .extensions
            .get::<TarnOptions>()
            .is_none_or(|o| o.share_subplans);
        if !enabled {
            return Ok(plan);
        }
        let mut seen: HashMap<LogicalPlan, usize> = HashMap::new();
        plan.apply_with_subqueries(|node| {
            if let LogicalPlan::SubqueryAlias(alias) = node
                && worth_sharing(&alias.input)
            {
                *seen.entry(alias.input.as_ref().clone()).or_default() += 1;
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        let repeated: Vec<LogicalPlan> = seen
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(p, _)| p)
            .collect();
        if repeated.is_empty() {
            return Ok(plan);
        }
        // Top down, so each alias is compared with its plan as written; subqueries inside a
        // shared one are wrapped the same way in every copy, which keeps the copies equal.
        plan.transform_down_with_subqueries(|node| {
            let LogicalPlan::SubqueryAlias(alias) = node else {
                return Ok(Transformed::no(node));
            };
            let Some(id) = repeated.iter().position(|p| p == alias.input.as_ref()) else {
                return Ok(Transformed::no(LogicalPlan::SubqueryAlias(alias)));
            };
            let shared = LogicalPlan::Extension(Extension {
                node: Arc::new(SharedSubplan {
                    id,
                    input: alias.input,
                }),
            });
            SubqueryAlias::try_new(Arc::new(shared), alias.alias)
                .map(|a| Transformed::yes(LogicalPlan::SubqueryAlias(a)))
        })
        .map(|t| t.data)
    }
}

/// Whether computing `plan` once and holding its rows is worth it: its result is an
/// aggregation (below projections, filters and sorts), and it reads nothing from an outer
/// query (a correlated subquery is turned into a join, which a shared node would block).
fn worth_sharing(plan: &LogicalPlan) -> bool {
    fn ends_in_aggregate(plan: &LogicalPlan) -> bool {
        match plan {
            LogicalPlan::Projection(p) => ends_in_aggregate(&p.input),
            LogicalPlan::Filter(f) => ends_in_aggregate(&f.input),
            LogicalPlan::Sort(s) => ends_in_aggregate(&s.input),
            LogicalPlan::SubqueryAlias(s) => ends_in_aggregate(&s.input),
            LogicalPlan::Aggregate(_) | LogicalPlan::Distinct(_) => true,
            _ => false,
        }
    }
    if !ends_in_aggregate(plan) {
        return false;
    }
    let mut correlated = false;
    let _ = plan.apply_with_subqueries(|node| {
        correlated = node.contains_outer_reference();
        Ok(if correlated {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    !correlated
}

/// The names of `plan`'s output columns that are grouping columns of its aggregation,
/// passed on unchanged (or only renamed) by the projections above it.
fn grouping_columns(plan: &LogicalPlan) -> HashSet<String> {
    match plan {
        LogicalPlan::Projection(p) => {
            let below = grouping_columns(&p.input);
            p.expr
                .iter()
                .zip(p.schema.fields())
                .filter_map(|(e, field)| match e.clone().unalias() {
                    Expr::Column(c) if below.contains(&c.name) => Some(field.name().clone()),
                    _ => None,
                })
                .collect()
        }
        LogicalPlan::Filter(f) => grouping_columns(&f.input),
        LogicalPlan::Sort(s) => grouping_columns(&s.input),
        LogicalPlan::SubqueryAlias(s) => grouping_columns(&s.input),
        LogicalPlan::Aggregate(a) => a
            .group_expr
            .iter()
            .zip(a.schema.fields())
            .filter(|(e, _)| matches!(e, Expr::Column(_)))
            .map(|(_, field)| field.name().clone())
            .collect(),
        LogicalPlan::Distinct(d) => d
            .input()
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect(),
        _ => HashSet::new(),
    }
}

/// A subquery that is computed once for all its copies with the same `id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct SharedSubplan {
    id: usize,
    input: Arc<LogicalPlan>,
}

impl UserDefinedLogicalNodeCore for SharedSubplan {
    fn name(&self) -> &str {
        "SharedSubplan"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    /// A filter on a grouping column passes into the subquery (it may prune files; copies
    /// that end up with different filters are computed separately). A filter on an
    /// aggregate stays above: it would stay above the aggregation anyway, and in the copy
    /// it would make the copies differ (TPC-H Q15 keeps the rows equal to the maximum).
    fn prevent_predicate_push_down_columns(&self) -> HashSet<String> {
        let keys = grouping_columns(&self.input);
        self.input
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|name| !keys.contains(name))
            .collect()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SharedSubplan: id={}", self.id)
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        match (inputs.pop(), inputs.is_empty()) {
            (Some(input), true) => Ok(Self {
                id: self.id,
                input: Arc::new(input),
            }),
            _ => internal_err!("SharedSubplan takes one input"),
        }
    }
}

/// Tarn's physical planner: DataFusion's, with the shared subplans of one query planned
/// into one slot per group of equal copies.
#[derive(Debug, Default)]
pub struct TarnQueryPlanner;

#[async_trait]
impl QueryPlanner for TarnQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // A planner per query: its slots are this query's.
        let planner = DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(
            SharedSubplanPlanner::default(),
        )]);
        planner
            .create_physical_plan(logical_plan, session_state)
            .await
    }
}

/// Plans [`SharedSubplan`] nodes, one slot per id and optimised plan.
#[derive(Debug, Default)]
struct SharedSubplanPlanner {
    slots: Mutex<Vec<(usize, LogicalPlan, Arc<Slot>)>>,
}

#[async_trait]
impl ExtensionPlanner for SharedSubplanPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session_state: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<SharedSubplan>() else {
            return Ok(None);
        };
        let [input] = physical_inputs else {
            return internal_err!("SharedSubplan takes one input");
        };
        let slot = {
            let mut slots = self
                .slots
                .lock()
                .map_err(|_| DataFusionError::Internal("shared subplan slots poisoned".into()))?;
            let found = slots
                .iter()
                .find(|(id, plan, _)| *id == node.id && plan == node.input.as_ref())
                .map(|(_, _, slot)| Arc::clone(slot));
            found.unwrap_or_else(|| {
                let slot = Arc::new(Slot::new(node.id));
                slots.push((node.id, node.input.as_ref().clone(), Arc::clone(&slot)));
                slot
            })
        };
        slot.users.fetch_add(1, Ordering::Relaxed);
        Ok(Some(Arc::new(SharedSubplanExec::new(
            Arc::clone(input),
            slot,
        ))))
    }
}

/// What the copies of one subquery share: its batches, once the first copy computed them.
#[derive(Debug)]
struct Slot {
    id: usize,
    /// How many copies were planned into this slot; with one, nothing is held.
    users: AtomicUsize,
    batches: tokio::sync::OnceCell<std::result::Result<Arc<Held>, Arc<DataFusionError>>>,
}

/// The subquery's batches per partition, and the memory they are counted in.
#[derive(Debug)]
struct Held {
    partitions: Vec<Vec<RecordBatch>>,
    _reservation: MemoryReservation,
}

impl Slot {
    fn new(id: usize) -> Self {
        Self {
            id,
            users: AtomicUsize::new(0),
            batches: tokio::sync::OnceCell::new(),
        }
    }

    /// The subquery's batches, computed by the first caller. The work runs in a task of
    /// its own, so it goes on whichever copy its consumers poll; if that caller is dropped
    /// the task stops and the next caller starts again.
    async fn held(
        &self,
        input: &Arc<dyn ExecutionPlan>,
        ctx: &Arc<TaskContext>,
    ) -> Result<Arc<Held>> {
        let held = self
            .batches
            .get_or_init(|| async {
                let plan = Arc::clone(input);
                let ctx = Arc::clone(ctx);
                let id = self.id;
                let task = SpawnedTask::spawn(async move {
                    let partitions = collect_partitioned(plan, Arc::clone(&ctx)).await?;
                    let bytes = partitions
                        .iter()
                        .flatten()
                        .map(RecordBatch::get_array_memory_size)
                        .sum();
                    let reservation = MemoryConsumer::new(format!("SharedSubplanExec[id={id}]"))
                        .register(ctx.memory_pool());
                    reservation.try_grow(bytes)?;
                    Ok(Arc::new(Held {
                        partitions,
                        _reservation: reservation,
                    }))
                });
                match task.join().await {
                    Ok(result) => result.map_err(Arc::new),
                    Err(e) => Err(Arc::new(DataFusionError::External(Box::new(e)))),
                }
            })
            .await;
        held.clone().map_err(DataFusionError::Shared)
    }
}

/// One copy of a shared subquery (see the module documentation). Its output is its
/// input's, partition by partition, so it keeps the input's partitioning and ordering.
#[derive(Debug)]
pub struct SharedSubplanExec {
    input: Arc<dyn ExecutionPlan>,
    slot: Arc<Slot>,
    properties: Arc<PlanProperties>,
}

impl SharedSubplanExec {
    fn new(input: Arc<dyn ExecutionPlan>, slot: Arc<Slot>) -> Self {
        let properties = Arc::new(PlanProperties::new(
            input.equivalence_properties().clone(),
            input.output_partitioning().clone(),
            EmissionType::Final,
            input.boundedness(),
        ));
        Self {
            input,
            slot,
            properties,
        }
    }
}

impl DisplayAs for SharedSubplanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "SharedSubplanExec: id={}, copies={}",
            self.slot.id,
            self.slot.users.load(Ordering::Relaxed)
        )
    }
}

impl ExecutionPlan for SharedSubplanExec {
    fn name(&self) -> &str {
        "SharedSubplanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (Some(input), true) = (children.pop(), children.is_empty()) else {
            return internal_err!("SharedSubplanExec takes one input");
        };
        Ok(Arc::new(match options.children_properties {
            ChildrenPropertiesMode::Keep => Self {
                input,
                slot: Arc::clone(&self.slot),
                properties: Arc::clone(&self.properties),
            },
            ChildrenPropertiesMode::Recompute => Self::new(input, Arc::clone(&self.slot)),
        }))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    /// A plan run again (a recursive query's step) computes its subquery again: the copy
    /// gets a slot of its own.
    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self {
            input: Arc::clone(&self.input),
            slot: Arc::new(Slot::new(self.slot.id)),
            properties: Arc::clone(&self.properties),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if self.slot.users.load(Ordering::Relaxed) < 2
            || !matches!(self.input.boundedness(), Boundedness::Bounded)
        {
            return self.input.execute(partition, context);
        }
        let slot = Arc::clone(&self.slot);
        let input = Arc::clone(&self.input);
        let stream = futures::stream::once(async move {
            let held = slot.held(&input, &context).await?;
            let partitions = input.output_partitioning().partition_count();
            match held.partitions.get(partition) {
                Some(batches) if held.partitions.len() == partitions => {
                    Ok(futures::stream::iter(batches.clone().into_iter().map(Ok)).boxed())
                }
                // The copy that computed the batches was planned with other partitions
                // (the physical optimiser treated the copies differently): run this one.
                _ => input.execute(partition, context).map(StreamExt::boxed),
            }
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            stream,
        )))
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        match input_stats {
            [input] => Ok(Arc::clone(input)),
            _ => Ok(Arc::new(Statistics::new_unknown(&self.schema()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// 1,000 rows of `k` (0 to 9) and `v`, in four partitions.
    fn context(share: bool) -> SessionContext {
        let mut config = SessionConfig::new()
            .with_target_partitions(4)
            .with_option_extension(TarnOptions::default());
        config
            .options_mut()
            .extensions
            .get_mut::<TarnOptions>()
            .expect("tarn options")
            .share_subplans = share;
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_config(config)
            .with_analyzer_rule(Arc::new(ShareRepeatedSubplans))
            .with_query_planner(Arc::new(TarnQueryPlanner))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let partitions = (0..4i64)
            .map(|p| {
                let rows: Vec<i64> = (p * 250..(p + 1) * 250).collect();
                let batch = RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![
                        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r % 10))),
                        Arc::new(Int64Array::from_iter_values(
                            rows.iter().map(|r| r * 3 % 17),
                        )),
                    ],
                )
                .expect("batch");
                vec![batch]
            })
            .collect();
        let table = MemTable::try_new(schema, partitions).expect("table");
        ctx.register_table("t", Arc::new(table)).expect("register");
        ctx
    }

    async fn run(ctx: &SessionContext, sql: &str) -> (Vec<String>, String) {
        let df = ctx.sql(sql).await.expect("plan");
        let plan = df.create_physical_plan().await.expect("physical plan");
        let shown = displayable(plan.as_ref()).indent(false).to_string();
        let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx())
            .await
            .expect("run");
        let text = arrow::util::pretty::pretty_format_batches(&batches)
            .expect("format")
            .to_string();
        let mut rows: Vec<String> = text.lines().map(str::to_string).collect();
        rows.sort();
        (rows, shown)
    }

    /// The shape of TPC-H Q15: an aggregating CTE joined and compared with its maximum.
    const TOP: &str = "WITH r AS (SELECT k, sum(v) AS s FROM t WHERE v > 2 GROUP BY k) \
        SELECT r.k, r.s FROM r WHERE r.s = (SELECT max(s) FROM r) ORDER BY r.k";

    #[tokio::test]
    async fn a_cte_named_twice_is_computed_once_with_the_same_answer() {
        let (shared, plan) = run(&context(true), TOP).await;
        let (separate, plan_without) = run(&context(false), TOP).await;
        assert_eq!(shared, separate);
        assert!(shared.len() > 4, "{shared:?}");
        assert_eq!(
            plan.matches("SharedSubplanExec: id=0, copies=2").count(),
            2,
            "{plan}"
        );
        assert!(
            !plan_without.contains("SharedSubplanExec"),
            "{plan_without}"
        );
    }

    #[tokio::test]
    async fn the_copies_read_one_result() {
        // random() is evaluated once per group when the CTE is computed once: the two
        // copies then agree on every row, which two separate computations would not.
        let sql = "WITH r AS (SELECT k, sum(v) + random() AS s FROM t GROUP BY k) \
            SELECT count(*) AS n, sum(CASE WHEN a.s = b.s THEN 1 ELSE 0 END) AS same \
            FROM r a JOIN r b ON a.k = b.k";
        let (rows, _) = run(&context(true), sql).await;
        assert!(rows.iter().any(|r| r.contains("| 10 | 10   |")), "{rows:?}");
        let (rows, _) = run(&context(false), sql).await;
        assert!(rows.iter().any(|r| r.contains("| 10 | 0    |")), "{rows:?}");
    }

    #[tokio::test]
    async fn copies_with_different_filters_are_computed_separately() {
        let sql = "WITH r AS (SELECT k, sum(v) AS s FROM t GROUP BY k) \
            SELECT * FROM r WHERE k = 1 UNION ALL SELECT * FROM r WHERE k = 2 \
            UNION ALL SELECT * FROM r WHERE k = 2";
        let (shared, plan) = run(&context(true), sql).await;
        let (separate, _) = run(&context(false), sql).await;
        assert_eq!(shared, separate);
        // The two copies filtered on k = 2 share a slot; the one on k = 1 runs alone.
        assert_eq!(plan.matches("copies=2").count(), 2, "{plan}");
        assert_eq!(plan.matches("copies=1").count(), 1, "{plan}");
    }

    #[tokio::test]
    async fn subqueries_that_are_not_aggregations_or_are_correlated_are_left_alone() {
        let plain = "WITH r AS (SELECT k, v FROM t WHERE v > 10) \
            SELECT count(*) FROM r a JOIN r b ON a.k = b.k";
        let (rows, plan) = run(&context(true), plain).await;
        assert!(!plan.contains("SharedSubplanExec"), "{plan}");
        assert_eq!(rows, run(&context(false), plain).await.0);
        let correlated = "SELECT k, v FROM t o \
            WHERE v > (SELECT avg(i.v) FROM t i WHERE i.k = o.k) \
            AND v < (SELECT avg(i.v) FROM t i WHERE i.k = o.k) + 5 ORDER BY k, v";
        let without = run(&context(false), correlated).await.0;
        let (rows, _) = run(&context(true), correlated).await;
        assert_eq!(rows, without);
        assert!(rows.len() > 10, "{rows:?}");
    }

    #[tokio::test]
    async fn a_subquery_in_in_and_exists_is_shared_too() {
        let sql = "WITH big AS (SELECT k FROM t GROUP BY k HAVING sum(v) > 800) \
            SELECT count(*) FROM t WHERE k IN (SELECT k FROM big) \
            AND EXISTS (SELECT 1 FROM big WHERE big.k = t.k)";
        let (shared, plan) = run(&context(true), sql).await;
        assert_eq!(shared, run(&context(false), sql).await.0);
        assert!(plan.contains("copies=2"), "{plan}");
    }
}
