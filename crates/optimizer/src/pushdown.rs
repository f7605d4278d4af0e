//! Filters pushed through a projection land on the columns they name, also where two
//! columns of the projection have the same name.
//!
//! DataFusion's physical filter pushdown (before its other physical rules, and again after
//! them for joins' dynamic filters) carries a filter above a projection down to the
//! projection's input by looking its columns up **by name**. A self-join's projection has
//! two columns called `opened` (`st1.opened, st2.opened`), so a filter `st1.opened IS
//! DISTINCT FROM st2.opened` above it came out as `opened IS DISTINCT FROM opened` over one
//! side, was pushed into that side's scan, and a RIGHT JOIN lost its rows.
//!
//! Every other node maps a filter onto its child the same way (`child_schema.index_of`),
//! so a filter on the second of two `cust_id` columns of a child (a join's dynamic filter
//! on the customers' key, above a join that also outputs the sales' `cust_id`) landed on
//! the first, and an IN subquery over a RIGHT JOIN lost rows.
//!
//! This rule runs DataFusion's pushdown with each projection that has repeated output
//! names standing in an [`IndexedProjection`], which keeps the filters above it where one
//! names a repeated column (and lets DataFusion push them where none does), and with a
//! [`NameGuard`] above every other node whose output repeats a name, which refuses the
//! filters that name a repeated column (whatever index its parent mapped them to) and
//! passes the others on; afterwards the projections are put back and the guards removed.
//! Nodes with unique names are left to DataFusion.

use std::fmt;
use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{HashSet, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::filter_pushdown::FilterPushdown;
use datafusion::physical_plan::filter_pushdown::{
    ChildFilterDescription, ChildPushdownResult, FilterDescription, FilterPushdownPhase,
    FilterPushdownPropagation,
};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{
    ChildStats, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties,
    ReplaceChildrenOptions, SendableRecordBatchStream, Statistics, StatisticsArgs,
};

/// DataFusion's filter pushdown with projections of repeated names handled by position.
#[derive(Debug)]
pub struct PositionalFilterPushdown {
    inner: FilterPushdown,
}

impl PositionalFilterPushdown {
    pub fn new(inner: FilterPushdown) -> Self {
        Self { inner }
    }
}

impl PhysicalOptimizerRule for PositionalFilterPushdown {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn schema_check(&self) -> bool {
        self.inner.schema_check()
    }

    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let wrapped = plan
            .transform_up(|node| {
                let (node, indexed) = match node.downcast_ref::<ProjectionExec>() {
                    Some(projection) if repeats_names(projection) => (
                        Arc::new(IndexedProjection::new(Arc::clone(&node))) as _,
                        true,
                    ),
                    _ => (node, false),
                };
                if repeated_names(&node.schema()).is_empty() {
                    return Ok(if indexed {
                        Transformed::yes(node)
                    } else {
                        Transformed::no(node)
                    });
                }
                Ok(Transformed::yes(Arc::new(NameGuard::new(node)) as _))
            })?
            .data;
        let pushed = self.inner.optimize(wrapped, config)?;
        pushed
            .transform_up(|node| {
                if let Some(indexed) = node.downcast_ref::<IndexedProjection>() {
                    return Ok(Transformed::yes(Arc::clone(&indexed.projection)));
                }
                if let Some(guard) = node.downcast_ref::<NameGuard>() {
                    return Ok(Transformed::yes(Arc::clone(&guard.input)));
                }
                Ok(Transformed::no(node))
            })
            .map(|t| t.data)
    }
}

/// The names that two or more of `schema`'s fields have.
fn repeated_names(schema: &arrow::datatypes::SchemaRef) -> HashSet<String> {
    let mut seen = HashSet::new();
    schema
        .fields()
        .iter()
        .filter(|f| !seen.insert(f.name().as_str()))
        .map(|f| f.name().clone())
        .collect()
}

/// Whether two of a projection's outputs have the same name.
fn repeats_names(projection: &ProjectionExec) -> bool {
    let mut seen = HashSet::new();
    projection
        .expr()
        .iter()
        .any(|e| !seen.insert(e.alias.as_str()))
}

/// A [`ProjectionExec`] standing in for itself during filter pushdown, keeping filters
/// over its repeated names. It is never executed: the rule puts the projection back.
#[derive(Debug)]
struct IndexedProjection {
    /// The projection, with its current input.
    projection: Arc<dyn ExecutionPlan>,
}

impl IndexedProjection {
    fn new(projection: Arc<dyn ExecutionPlan>) -> Self {
        Self { projection }
    }

    fn exec(&self) -> Option<&ProjectionExec> {
        self.projection.downcast_ref::<ProjectionExec>()
    }
}

impl DisplayAs for IndexedProjection {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match self.exec() {
            Some(p) => p.fmt_as(t, f),
            None => write!(f, "IndexedProjection"),
        }
    }
}

impl ExecutionPlan for IndexedProjection {
    fn name(&self) -> &str {
        "IndexedProjection"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.projection.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.projection.children()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        self.projection.maintains_input_order()
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        self.projection.benefits_from_input_partitioning()
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.projection.apply_expressions(f)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let projection = Arc::clone(&self.projection).replace_children(children, options)?;
        Ok(Arc::new(Self::new(projection)))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let recompute = ReplaceChildrenOptions::new(
            datafusion::physical_plan::ChildrenPropertiesMode::Recompute,
        );
        self.replace_children(children, recompute)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.projection.execute(partition, context)
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        self.projection.child_stats_requests(partition)
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        self.projection.statistics_from_inputs(input_stats, args)
    }

    fn gather_filters_for_pushdown(
        &self,
        phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        config: &ConfigOptions,
    ) -> Result<FilterDescription> {
        // DataFusion's mapping is right for filters over columns whose names are unique in
        // the projection's output; a filter over a repeated name keeps every filter here.
        let repeated = repeated_names(&self.projection.schema());
        let over_repeated = parent_filters.iter().any(|f| {
            let mut found = false;
            let _ = f.apply(|e| {
                if let Some(c) = e.downcast_ref::<Column>()
                    && repeated.contains(c.name())
                {
                    found = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            });
            found
        });
        if over_repeated {
            return Ok(FilterDescription::all_unsupported(
                &parent_filters,
                &self.children(),
            ));
        }
        self.projection
            .gather_filters_for_pushdown(phase, parent_filters, config)
    }

    fn handle_child_pushdown_result(
        &self,
        phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        self.projection
            .handle_child_pushdown_result(phase, child_pushdown_result, config)
    }
}

/// A stand-in above a node whose output repeats a name, during filter pushdown only: its
/// parent mapped filters onto it by name, so a filter naming a repeated column may point
/// at the wrong one; such filters stay above, the others pass unchanged (the schema is
/// the node's own). The rule removes it afterwards.
#[derive(Debug)]
struct NameGuard {
    input: Arc<dyn ExecutionPlan>,
}

impl NameGuard {
    fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        Self { input }
    }
}

impl DisplayAs for NameGuard {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "NameGuard")
    }
}

impl ExecutionPlan for NameGuard {
    fn name(&self) -> &str {
        "NameGuard"
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
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match children.pop() {
            Some(input) if children.is_empty() => Ok(Arc::new(Self::new(input))),
            _ => datafusion::common::internal_err!("NameGuard has one child"),
        }
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let recompute = ReplaceChildrenOptions::new(
            datafusion::physical_plan::ChildrenPropertiesMode::Recompute,
        );
        self.replace_children(children, recompute)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(input_stats.first().map_or_else(
            || Arc::new(Statistics::new_unknown(&self.schema())),
            Arc::clone,
        ))
    }

    fn gather_filters_for_pushdown(
        &self,
        _phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterDescription> {
        let schema = self.input.schema();
        let repeated = repeated_names(&schema);
        let unique: std::collections::HashSet<usize> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| !repeated.contains(f.name()))
            .map(|(i, _)| i)
            .collect();
        Ok(FilterDescription::new().with_child(
            ChildFilterDescription::from_child_with_allowed_indices(
                &parent_filters,
                unique,
                &self.input,
            )?,
        ))
    }
}

#[cfg(test)]
mod tests {
    // A test fails by panicking; none of this is compiled outside tests.
    use crate::testing::{session, sorted_values};
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_filter_over_a_self_join_compares_both_sides() {
        let ctx = session();
        let schema = Arc::new(Schema::new(vec![
            Field::new("store_id", DataType::Int64, true),
            Field::new("manager", DataType::Utf8, true),
            Field::new("opened", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
                Arc::new(StringArray::from(vec![Some("ann"), None, None])),
                Arc::new(Int64Array::from(vec![10, 20, 30])),
            ],
        )
        .expect("stores");
        ctx.register_table(
            "stores",
            Arc::new(MemTable::try_new(schema, vec![vec![batch]]).expect("table")),
        )
        .expect("register");
        // The store without an id joins nothing, so its st1 side is NULL-extended: NULL IS
        // DISTINCT FROM 20 is true. Store 3 joins itself: 30 IS DISTINCT FROM 30 is false.
        let sql = "SELECT st2.opened FROM stores st1 RIGHT JOIN stores st2 \
                   ON st1.store_id = st2.store_id \
                   WHERE (st1.opened IS DISTINCT FROM st2.opened) AND st2.manager IS NULL";
        assert_eq!(sorted_values(&ctx, sql).await, vec!["20"]);
    }
}
