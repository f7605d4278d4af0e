//! A subquery the query names more than once is computed once.
//!
//! DataFusion copies a common table expression (or a view, or a derived table) into every
//! place that names it. TPC-H Q15 names its revenue view twice, once to join it with the
//! suppliers and once for its maximum, so `lineitem` is scanned and aggregated twice.
//!
//! The analyzer rule [`ShareRepeatedSubplans`] finds subqueries whose plans are equal and
//! read the same tables, that appear more than once (uncorrelated scalar, `IN` and
//! `EXISTS` subqueries included), and whose result is an aggregation (small next to what
//! it reads, and held in memory by the aggregation anyway) without volatile functions.
//! Each copy is wrapped in a [`SharedSubplan`] node with the group's id. Filters on
//! grouping keys still pass into the copies (they may prune files); other filters and the
//! column pruning stop at the wrapper, so the copies stay equal.
//!
//! When the plan is made physical ([`TarnQueryPlanner`]), a copy left without an equal
//! one (the others got other filters) is unwrapped and the plan optimised again. Copies
//! still equal share one slot: the first [`SharedSubplanExec`] to run starts computing the
//! subquery's partitions in a task of its own, every copy awaits that one computation,
//! the batches are held (counted in the memory pool) and replayed to each copy.
//! `--datafusion-config tarn.share_subplans=false` turns the rule off.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::config::ConfigOptions;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchemaRef, DataFusionError, Result, internal_err};
use datafusion::datasource::source_as_provider;
use datafusion::execution::context::{QueryPlanner, SessionState};
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
use futures::future::{BoxFuture, FutureExt, Shared};
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
        if !TarnOptions::get(config, |o| o.share_subplans) {
            return Ok(plan);
        }
        let mut seen = Vec::new();
        count(&plan, &mut seen, false)?;
        seen.retain(|c| c.copies > 1);
        if seen.is_empty() {
            return Ok(plan);
        }
        wrap(plan, &seen, false).map(|t| t.data)
    }
}

/// A subquery that may be shared, and how often the query names it.
struct Candidate {
    plan: LogicalPlan,
    /// The tables its scans read (providers' addresses, in plan order): plans compare
    /// tables by the name written, which two databases may share.
    tables: Vec<usize>,
    copies: usize,
}

/// The input of `node` if it is an alias over a subquery worth sharing, with its tables.
/// An alias of an alias (`FROM r AS a`) is left to the inner alias. Inside a correlated
/// subquery, a single-row subquery is not wrapped: decorrelation checks that a correlated
/// scalar subquery returns at most one row, which the wrapper would hide.
fn candidate(node: &LogicalPlan, correlated: bool) -> Option<(&LogicalPlan, Vec<usize>)> {
    match node {
        LogicalPlan::SubqueryAlias(alias)
            if !matches!(alias.input.as_ref(), LogicalPlan::SubqueryAlias(_))
                && (!correlated || alias.input.max_rows().is_none_or(|n| n > 1))
                && worth_sharing(&alias.input) =>
        {
            Some((&alias.input, tables(&alias.input)))
        }
        _ => None,
    }
}

fn tables(plan: &LogicalPlan) -> Vec<usize> {
    let mut out = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let address = match source_as_provider(&scan.source) {
                Ok(provider) => Arc::as_ptr(&provider).cast::<()>() as usize,
                Err(_) => Arc::as_ptr(&scan.source).cast::<()>() as usize,
            };
            out.push(address);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out
}

/// Counts the candidates of `plan` and of its subqueries (`correlated`: inside a
/// correlated one), in the order they first appear, so the ids (and `EXPLAIN`) are the
/// same every time.
fn count(plan: &LogicalPlan, seen: &mut Vec<Candidate>, correlated: bool) -> Result<()> {
    plan.apply(|node| {
        if let Some((input, tables)) = candidate(node, correlated) {
            match seen
                .iter_mut()
                .find(|c| c.plan == *input && c.tables == tables)
            {
                Some(c) => c.copies += 1,
                None => seen.push(Candidate {
                    plan: input.clone(),
                    tables,
                    copies: 1,
                }),
            }
        }
        node.apply_subqueries(|sub| {
            if let LogicalPlan::Subquery(sq) = sub {
                let inner = correlated || !sq.outer_ref_columns.is_empty();
                count(&sq.subquery, seen, inner)?;
            }
            Ok(TreeNodeRecursion::Continue)
        })
    })
    .map(|_| ())
}

/// Wraps each copy of a repeated candidate, top down, where [`count`] counted it. A
/// repeated subquery inside a wrapped one is computed with it and not wrapped again.
fn wrap(
    plan: LogicalPlan,
    repeated: &[Candidate],
    correlated: bool,
) -> Result<Transformed<LogicalPlan>> {
    plan.transform_down(|node| {
        let Transformed {
            data: node,
            transformed,
            ..
        } = node.map_subqueries(|sub| match sub {
            LogicalPlan::Subquery(sq) => {
                let inner = correlated || !sq.outer_ref_columns.is_empty();
                wrap(LogicalPlan::Subquery(sq), repeated, inner)
            }
            other => Ok(Transformed::no(other)),
        })?;
        let id = candidate(&node, correlated).and_then(|(input, tables)| {
            repeated
                .iter()
                .position(|c| c.plan == *input && c.tables == tables)
        });
        match (id, node) {
            (Some(id), LogicalPlan::SubqueryAlias(alias)) => {
                let shared = LogicalPlan::Extension(Extension {
                    node: Arc::new(SharedSubplan {
                        id,
                        input: alias.input,
                    }),
                });
                let alias = SubqueryAlias::try_new(Arc::new(shared), alias.alias)?;
                Ok(Transformed::new(
                    LogicalPlan::SubqueryAlias(alias),
                    true,
                    TreeNodeRecursion::Jump,
                ))
            }
            (_, node) => Ok(Transformed::new(
                node,
                transformed,
                TreeNodeRecursion::Continue,
            )),
        }
    })
}

/// Whether computing `plan` once and holding its rows is worth it and safe: its result is
/// an aggregation (below projections, filters and sorts), it reads nothing from an outer
/// query (a correlated subquery becomes a join, which the wrapper would block), and it
/// calls no volatile function (two derived tables calling `random()` each get their own).
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
    let mut excluded = false;
    let _ = plan.apply_with_subqueries(|node| {
        excluded = node.contains_outer_reference()
            || node
                .expressions()
                .iter()
                .any(datafusion::logical_expr::Expr::is_volatile);
        Ok(if excluded {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    !excluded
}

/// The shared subquery under `plan`, if `plan` is a [`SharedSubplan`] node (for the
/// engine's own rules, which look through it).
pub(crate) fn shared_input(plan: &LogicalPlan) -> Option<&LogicalPlan> {
    match plan {
        LogicalPlan::Extension(e) => e
            .node
            .as_any()
            .downcast_ref::<SharedSubplan>()
            .map(|s| s.input.as_ref()),
        _ => None,
    }
}

/// The names of `plan`'s output columns that are grouping expressions of its aggregation
/// (a column or a computed key such as `date_trunc('day', ts)`), passed on unchanged (or
/// only renamed) by the projections above it.
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
            .filter(|(e, _)| !matches!(e, Expr::GroupingSet(_)))
            .map(|(_, field)| field.name().clone())
            .collect(),
        // `DISTINCT` keys on every column; `DISTINCT ON` on expressions of its own.
        LogicalPlan::Distinct(datafusion::logical_expr::Distinct::All(input)) => input
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
/// into one slot per group of equal copies, and decimal arithmetic that skips overflow
/// checks where a batch proves them needless (`super::decimal`).
#[derive(Debug, Default)]
pub struct TarnQueryPlanner;

#[async_trait]
impl QueryPlanner for TarnQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // A copy that optimisation left alone (the others got other filters, or were
        // optimised away) is unwrapped and the plan optimised again, so it gets back the
        // column pruning and pushdowns the wrapper stopped.
        undecorrelated_subquery(logical_plan)?;
        let (plan, stripped) = strip_lone_copies(logical_plan)?;
        let plan = match session_state.as_any().downcast_ref::<SessionState>() {
            Some(state) if stripped => state.optimizer().optimize(plan, state, |_, _| {})?,
            _ => plan,
        };
        let fast_decimals =
            TarnOptions::get(session_state.config_options(), |o| o.decimal_fast_path);
        let plan = if fast_decimals {
            super::decimal::rewrite(plan)?
        } else {
            plan
        };
        let plan = if TarnOptions::get(session_state.config_options(), |o| o.like_parts) {
            super::like::rewrite(plan)?
        } else {
            plan
        };
        // A planner per query: its slots are this query's.
        let planner = DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(
            SharedSubplanPlanner::default(),
        )]);
        planner.create_physical_plan(&plan, session_state).await
    }
}

/// A plan error naming the subquery DataFusion could not turn into a join, and how to
/// write it, instead of its "Physical plan does not support logical expression
/// ScalarSubquery(<subquery>)".
fn undecorrelated_subquery(plan: &LogicalPlan) -> Result<()> {
    use datafusion::logical_expr::Expr;
    let mut found: Option<&'static str> = None;
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                found = match e {
                    // Uncorrelated ones run on their own before the query.
                    Expr::ScalarSubquery(sq) if !sq.outer_ref_columns.is_empty() => Some(
                        "a scalar subquery correlated other than by equalities with the \
                         outer query (for example `inner.id <> outer.id`)",
                    ),
                    Expr::Exists(_) | Expr::InSubquery(_) => Some(
                        "an EXISTS or IN subquery in a place it cannot be turned into a join \
                         (a select list, or correlated other than by equalities)",
                    ),
                    _ => None,
                };
                Ok(if found.is_some() {
                    TreeNodeRecursion::Stop
                } else {
                    TreeNodeRecursion::Continue
                })
            })
        })
    })?;
    match found {
        Some(what) => Err(DataFusionError::Plan(format!(
            "this query has {what}, which Tarn cannot run yet; write it as a join with an \
             aggregated subquery (… JOIN (SELECT key, avg(x) … GROUP BY key) s ON …), or \
             correlate it by equalities only"
        ))),
        None => Ok(()),
    }
}

/// `plan` with every shared subplan computed wherever it is named (for plans split across
/// processes, where copies in different processes cannot share one computation), and
/// whether it had any.
///
/// # Errors
/// Only DataFusion's, from rewriting the plan.
pub fn unshare_subplans(plan: &LogicalPlan) -> Result<(LogicalPlan, bool)> {
    let unshared = plan.clone().transform_down_with_subqueries(|node| {
        if let LogicalPlan::Extension(e) = &node
            && let Some(shared) = e.node.as_any().downcast_ref::<SharedSubplan>()
        {
            return Ok(Transformed::yes(shared.input.as_ref().clone()));
        }
        Ok(Transformed::no(node))
    })?;
    Ok((unshared.data, unshared.transformed))
}

/// `plan` without the [`SharedSubplan`] nodes that have no equal copy, and whether there
/// were any.
fn strip_lone_copies(plan: &LogicalPlan) -> Result<(LogicalPlan, bool)> {
    let mut copies: Vec<(SharedSubplan, usize)> = Vec::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::Extension(e) = node
            && let Some(shared) = e.node.as_any().downcast_ref::<SharedSubplan>()
        {
            match copies.iter_mut().find(|(s, _)| s == shared) {
                Some((_, n)) => *n += 1,
                None => copies.push((shared.clone(), 1)),
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let lone: Vec<SharedSubplan> = copies
        .into_iter()
        .filter(|(_, n)| *n == 1)
        .map(|(s, _)| s)
        .collect();
    if lone.is_empty() {
        return Ok((plan.clone(), false));
    }
    let plan = plan
        .clone()
        .transform_down_with_subqueries(|node| {
            if let LogicalPlan::Extension(e) = &node
                && let Some(shared) = e.node.as_any().downcast_ref::<SharedSubplan>()
                && lone.contains(shared)
            {
                return Ok(Transformed::yes(shared.input.as_ref().clone()));
            }
            Ok(Transformed::no(node))
        })?
        .data;
    Ok((plan, true))
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

/// The subquery's batches, or why they could not be computed (for every copy).
type Computed = std::result::Result<Arc<Held>, Arc<DataFusionError>>;

/// What the copies of one subquery share: its batches, once the first copy computed them.
#[derive(Debug)]
struct Slot {
    id: usize,
    /// How many copies were planned into this slot; with one, nothing is held.
    users: AtomicUsize,
    computing: Mutex<Option<Shared<BoxFuture<'static, Computed>>>>,
}

/// The subquery's batches per partition, what they were computed as, and the memory they
/// are counted in.
#[derive(Debug)]
struct Held {
    schema: SchemaRef,
    partitions: Vec<Vec<RecordBatch>>,
    _reservation: MemoryReservation,
}

impl Slot {
    fn new(id: usize) -> Self {
        Self {
            id,
            users: AtomicUsize::new(0),
            computing: Mutex::new(None),
        }
    }

    /// The subquery's batches: the first caller starts computing them from its copy's
    /// `input`, in a task of its own, and every caller awaits the same shared future, so
    /// any copy that is polled drives it to the end. The task stops when the plan is
    /// dropped.
    fn held(
        &self,
        input: &Arc<dyn ExecutionPlan>,
        ctx: &Arc<TaskContext>,
    ) -> Result<Shared<BoxFuture<'static, Computed>>> {
        let mut computing = self
            .computing
            .lock()
            .map_err(|_| DataFusionError::Internal("shared subplan slot poisoned".into()))?;
        if let Some(computed) = computing.as_ref() {
            return Ok(computed.clone());
        }
        let plan = Arc::clone(input);
        let ctx = Arc::clone(ctx);
        let id = self.id;
        let task = SpawnedTask::spawn(async move {
            let schema = plan.schema();
            let partitions = collect_partitioned(plan, Arc::clone(&ctx)).await?;
            // Aggregations emit slices of one batch: each slice counts its own rows.
            let bytes = partitions
                .iter()
                .flatten()
                .flat_map(|b| {
                    b.columns()
                        .iter()
                        .map(|c| c.to_data().get_slice_memory_size())
                })
                .sum::<std::result::Result<usize, _>>()?;
            let reservation = MemoryConsumer::new(format!("SharedSubplanExec[id={id}]"))
                .register(ctx.memory_pool());
            reservation.try_grow(bytes)?;
            Ok(Arc::new(Held {
                schema,
                partitions,
                _reservation: reservation,
            }))
        });
        let computed = async move {
            match task.join().await {
                Ok(result) => result.map_err(Arc::new),
                Err(e) => Err(Arc::new(DataFusionError::External(Box::new(e)))),
            }
        }
        .boxed()
        .shared();
        *computing = Some(computed.clone());
        Ok(computed)
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
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = super::one_input(children, "SharedSubplanExec")?;
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
            let held = slot
                .held(&input, &context)?
                .await
                .map_err(DataFusionError::Shared)?;
            // Copies are planned from equal plans, and no physical rule reaches into one
            // (this node passes no sort, limit, projection or filter down, and does not
            // claim to keep its input's row count), so they stay alike. Should one be
            // planned differently after all, it runs on its own instead of replaying rows
            // of another shape.
            let alike = held.schema == input.schema()
                && held.partitions.len() == input.output_partitioning().partition_count();
            match held.partitions.get(partition) {
                Some(batches) if alike => {
                    Ok(futures::stream::iter(batches.clone().into_iter().map(Ok)).boxed())
                }
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
        Ok(super::input_statistics(input_stats, &self.schema()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::logical_expr::{
        ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
    };
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::SessionContext;

    /// `counted(v)`: `v`, counting the rows it is called on (an immutable function, as far
    /// as the planner knows), to see how often a subquery is computed.
    #[derive(Debug)]
    struct Counted {
        rows: Arc<AtomicUsize>,
        signature: Signature,
    }

    impl PartialEq for Counted {
        fn eq(&self, _other: &Self) -> bool {
            true
        }
    }
    impl Eq for Counted {}
    impl std::hash::Hash for Counted {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            "counted".hash(state);
        }
    }

    impl ScalarUDFImpl for Counted {
        fn name(&self) -> &str {
            "counted"
        }
        fn signature(&self) -> &Signature {
            &self.signature
        }
        fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
            Ok(DataType::Int64)
        }
        fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
            self.rows.fetch_add(args.number_rows, Ordering::Relaxed);
            args.args
                .into_iter()
                .next()
                .ok_or_else(|| DataFusionError::Internal("counted takes one argument".into()))
        }
    }

    /// 1,000 rows of `k` (0 to 9) and `v`, in four partitions; and how many rows
    /// `counted` was called on.
    fn context(share: bool) -> (SessionContext, Arc<AtomicUsize>) {
        let state = crate::test_state(4, |o| o.share_subplans = share)
            .with_analyzer_rule(Arc::new(ShareRepeatedSubplans))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let rows = Arc::new(AtomicUsize::new(0));
        ctx.register_udf(ScalarUDF::new_from_impl(Counted {
            rows: Arc::clone(&rows),
            signature: Signature::exact(vec![DataType::Int64], Volatility::Immutable),
        }));
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
        (ctx, rows)
    }

    /// The sorted rows of `sql`, its physical plan, and the rows `counted` saw.
    async fn run(share: bool, sql: &str) -> (Vec<String>, String, usize) {
        let (ctx, counted) = context(share);
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
        (rows, shown, counted.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn a_cte_named_twice_is_computed_once_with_the_same_answer() {
        // The shape of TPC-H Q15: an aggregating CTE joined and compared with its maximum.
        let sql = "WITH r AS (SELECT k, sum(counted(v)) AS s FROM t WHERE v > 2 GROUP BY k) \
            SELECT r.k, r.s FROM r WHERE r.s = (SELECT max(s) FROM r) ORDER BY r.k";
        let (shared, plan, once) = run(true, sql).await;
        let (separate, plan_without, twice) = run(false, sql).await;
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
        assert!(once > 0, "{once}");
        assert_eq!(twice, 2 * once);
    }

    #[tokio::test]
    async fn a_self_join_of_a_cte_shares_one_result() {
        // `FROM r a` is an alias of the alias `r`: one slot, computed once.
        let sql = "WITH r AS (SELECT k, sum(counted(v)) AS s FROM t GROUP BY k) \
            SELECT a.k, a.s + b.s FROM r a JOIN r b ON a.k = b.k";
        let (shared, plan, once) = run(true, sql).await;
        let (separate, _, twice) = run(false, sql).await;
        assert_eq!(shared, separate);
        assert_eq!(plan.matches("SharedSubplanExec").count(), 2, "{plan}");
        assert_eq!(plan.matches("copies=2").count(), 2, "{plan}");
        assert_eq!(once, 1000);
        assert_eq!(twice, 2000);
    }

    #[tokio::test]
    async fn copies_with_different_filters_are_computed_separately() {
        let sql = "WITH r AS (SELECT k % 3 AS g, sum(counted(v)) AS s FROM t GROUP BY k % 3) \
            SELECT * FROM r WHERE g = 1 UNION ALL SELECT * FROM r WHERE g = 2 \
            UNION ALL SELECT * FROM r WHERE g = 2";
        let (shared, plan, once) = run(true, sql).await;
        let (separate, _, separately) = run(false, sql).await;
        assert_eq!(shared, separate);
        // The filters on the computed grouping key reach the scan: each copy counts only
        // its group's rows. The two copies filtered on g = 2 share a slot; the one on
        // g = 1 is alone and runs without the wrapper.
        assert_eq!(plan.matches("copies=2").count(), 2, "{plan}");
        assert!(!plan.contains("copies=1"), "{plan}");
        assert!(once < separately, "{once} {separately}");
        assert!(separately < 1000, "{separately}");
    }

    #[tokio::test]
    async fn subqueries_that_are_not_aggregations_or_are_volatile_are_left_alone() {
        let plain = "WITH r AS (SELECT k, v FROM t WHERE v > 10) \
            SELECT count(*) FROM r a JOIN r b ON a.k = b.k";
        let (rows, plan, _) = run(true, plain).await;
        assert!(!plan.contains("SharedSubplanExec"), "{plan}");
        assert_eq!(rows, run(false, plain).await.0);
        // Two derived tables calling random() each get their own values.
        let volatile = "SELECT count(*) FROM \
            (SELECT k, sum(v) + random() AS s FROM t GROUP BY k) a JOIN \
            (SELECT k, sum(v) + random() AS s FROM t GROUP BY k) b ON a.k = b.k AND a.s = b.s";
        let (rows, plan, _) = run(true, volatile).await;
        assert!(!plan.contains("SharedSubplanExec"), "{plan}");
        assert!(rows.iter().any(|r| r.trim() == "| 0        |"), "{rows:?}");
    }

    #[tokio::test]
    async fn correlated_subqueries_plan_as_before() {
        let correlated = "SELECT k, v FROM t o \
            WHERE v > (SELECT avg(i.v) FROM t i WHERE i.k = o.k) \
            AND v < (SELECT avg(i.v) FROM t i WHERE i.k = o.k) + 5 ORDER BY k, v";
        let without = run(false, correlated).await.0;
        assert_eq!(run(true, correlated).await.0, without);
        assert!(without.len() > 10, "{without:?}");
        // A single-row aggregation named inside a correlated subquery and outside it:
        // decorrelation still sees that the inner one returns one row.
        let single = "WITH tot AS (SELECT sum(v) AS s FROM t) \
            SELECT o.k, (SELECT s FROM tot WHERE tot.s > o.v) AS a, (SELECT s FROM tot) AS b \
            FROM t o WHERE o.k = 1 AND o.v < 3";
        let without = run(false, single).await.0;
        assert_eq!(run(true, single).await.0, without);
        assert!(without.len() > 5, "{without:?}");
    }

    #[tokio::test]
    async fn a_subquery_in_in_and_exists_is_shared_too() {
        let sql = "WITH big AS (SELECT k FROM t GROUP BY k HAVING sum(counted(v)) > 800) \
            SELECT count(*) FROM t WHERE k IN (SELECT k FROM big) \
            AND EXISTS (SELECT 1 FROM big WHERE big.k = t.k)";
        let (shared, plan, once) = run(true, sql).await;
        let (separate, _, twice) = run(false, sql).await;
        assert_eq!(shared, separate);
        assert!(plan.contains("copies=2"), "{plan}");
        assert_eq!((once, twice), (1000, 2000));
    }
}
