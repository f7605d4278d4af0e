//! An outer join's null-extended side claims no constant columns.
//!
//! DataFusion derives which columns of a plan node's output are constant (a filter
//! `region = 'north'` makes `region` one) and lets sorts drop such columns from their keys.
//! A join carries over each side's constants, also where it extends that side with NULLs:
//! `customers LEFT JOIN stores ON … AND stores.region = 'north'` claimed `region` is
//! `'north'` on every output row, so `ORDER BY region NULLS LAST, cust_id` sorted by
//! `cust_id` alone and NULL-extended rows came first.
//!
//! This rule, the first of Tarn's physical optimizer, puts a [`NullableSideExec`] over the
//! side (or sides) of each outer join whose rows it extends with NULLs, where that side
//! has constants: the node passes its input through and reports the same orderings and
//! partitioning, but no equivalences or constants, so the join claims none for that side.

use std::fmt;
use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{JoinType, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ReplaceChildrenOptions;
use datafusion::physical_plan::filter_pushdown::{
    ChildPushdownResult, FilterDescription, FilterPushdownPhase, FilterPushdownPropagation,
};
use datafusion::physical_plan::joins::{
    HashJoinExec, NestedLoopJoinExec, SortMergeJoinExec, SymmetricHashJoinExec,
};
use datafusion::physical_plan::{
    ChildStats, ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan,
    PlanProperties, SendableRecordBatchStream, Statistics, StatisticsArgs,
};

/// The rule; see the module documentation.
#[derive(Debug, Default)]
pub struct OuterJoinConstants;

impl PhysicalOptimizerRule for OuterJoinConstants {
    fn name(&self) -> &str {
        "tarn_outer_join_constants"
    }

    fn schema_check(&self) -> bool {
        true
    }

    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(join_type) = outer_join_type(node.as_ref()) else {
                return Ok(Transformed::no(node));
            };
            let (left, right) = match join_type {
                JoinType::Left => (false, true),
                JoinType::Right => (true, false),
                JoinType::Full => (true, true),
                _ => return Ok(Transformed::no(node)),
            };
            let children: Vec<Arc<dyn ExecutionPlan>> =
                node.children().into_iter().cloned().collect();
            let [l, r] = children.as_slice() else {
                return Ok(Transformed::no(node));
            };
            let wrap = |side: &Arc<dyn ExecutionPlan>, extended: bool| {
                if extended && NullableSideExec::needed(side) {
                    Some(Arc::new(NullableSideExec::new(Arc::clone(side))) as _)
                } else {
                    None
                }
            };
            match (wrap(l, left), wrap(r, right)) {
                (None, None) => Ok(Transformed::no(node)),
                (new_l, new_r) => {
                    let children = vec![
                        new_l.unwrap_or_else(|| Arc::clone(l)),
                        new_r.unwrap_or_else(|| Arc::clone(r)),
                    ];
                    // Recomputed: the join's properties come from its new children's.
                    let recompute = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
                    Ok(Transformed::yes(
                        node.replace_children(children, recompute)?,
                    ))
                }
            }
        })
        .map(|t| t.data)
    }
}

/// The join type of a two-input join node.
fn outer_join_type(plan: &dyn ExecutionPlan) -> Option<JoinType> {
    if let Some(j) = plan.downcast_ref::<HashJoinExec>() {
        return Some(*j.join_type());
    }
    if let Some(j) = plan.downcast_ref::<SortMergeJoinExec>() {
        return Some(j.join_type());
    }
    if let Some(j) = plan.downcast_ref::<NestedLoopJoinExec>() {
        return Some(*j.join_type());
    }
    if let Some(j) = plan.downcast_ref::<SymmetricHashJoinExec>() {
        return Some(*j.join_type());
    }
    None
}

/// Passes its input through, reporting its orderings and partitioning but none of its
/// equivalences or constants (see the module documentation).
#[derive(Debug)]
pub struct NullableSideExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl NullableSideExec {
    pub(crate) fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let given = input.properties();
        let eq = given.equivalence_properties();
        let kept = EquivalenceProperties::new_with_orderings(
            Arc::clone(eq.schema()),
            eq.oeq_class().iter().cloned().map(|o| o.into_iter()),
        )
        .with_constraints(eq.constraints().clone());
        let properties = PlanProperties::new(
            kept,
            given.output_partitioning().clone(),
            given.emission_type,
            given.boundedness,
        );
        Self {
            input,
            properties: Arc::new(properties),
        }
    }

    /// Whether `side` claims constants a NULL-extended row would break.
    fn needed(side: &Arc<dyn ExecutionPlan>) -> bool {
        side.downcast_ref::<NullableSideExec>().is_none()
            && !side
                .properties()
                .equivalence_properties()
                .constants()
                .is_empty()
    }
}

impl DisplayAs for NullableSideExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "NullableSideExec")
    }
}

impl ExecutionPlan for NullableSideExec {
    fn name(&self) -> &str {
        "NullableSideExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
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
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = super::one_input(children, "NullableSideExec")?;
        Ok(Arc::new(Self::new(input)))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = super::one_input(children, "NullableSideExec")?;
        Ok(Arc::new(Self::new(input)))
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
        Ok(super::input_statistics(input_stats, &self.schema()))
    }

    fn gather_filters_for_pushdown(
        &self,
        _phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterDescription> {
        // Rows pass unchanged: filters (a join's dynamic filter) go on to the input.
        FilterDescription::from_children(parent_filters, &self.children())
    }

    fn handle_child_pushdown_result(
        &self,
        _phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        Ok(FilterPushdownPropagation::if_all(child_pushdown_result))
    }
}

#[cfg(test)]
mod tests {
    // A test fails by panicking; none of this is compiled outside tests.
    use crate::testing::{session, values};
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use std::sync::Arc;

    #[tokio::test]
    async fn nulls_of_an_outer_join_sort_where_asked() {
        let ctx = session();
        let customers = Arc::new(Schema::new(vec![
            Field::new("cust_id", DataType::Int64, true),
            Field::new("home_store", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&customers),
            vec![
                Arc::new(Int64Array::from(vec![101, 101, 202, 202, 303])),
                Arc::new(Int64Array::from(vec![1, 2, 1, 2, 3])),
            ],
        )
        .expect("customers");
        ctx.register_table(
            "customers",
            Arc::new(MemTable::try_new(customers, vec![vec![batch]]).expect("table")),
        )
        .expect("register");
        let stores = Arc::new(Schema::new(vec![
            Field::new("store_id", DataType::Int64, true),
            Field::new("region", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&stores),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec!["north", "south", "north"])),
            ],
        )
        .expect("stores");
        ctx.register_table(
            "stores",
            Arc::new(MemTable::try_new(stores, vec![vec![batch]]).expect("table")),
        )
        .expect("register");
        let sql = "SELECT c.cust_id, st.region FROM customers c LEFT JOIN stores st \
                   ON c.home_store = st.store_id AND st.region = 'north' \
                   ORDER BY 2 ASC NULLS LAST, 1";
        assert_eq!(
            values(&ctx, sql).await,
            vec![
                "101|north",
                "202|north",
                "303|north",
                "101|NULL",
                "202|NULL"
            ]
        );
        let first = format!("{sql} LIMIT 3");
        assert_eq!(
            values(&ctx, &first).await,
            vec!["101|north", "202|north", "303|north"]
        );
        // The same from the other side, and for a full join.
        let sql = "SELECT c.cust_id, st.region FROM stores st RIGHT JOIN customers c \
                   ON c.home_store = st.store_id AND st.region = 'north' \
                   ORDER BY 2 DESC NULLS FIRST, 1 LIMIT 2";
        assert_eq!(values(&ctx, sql).await, vec!["101|NULL", "202|NULL"]);
        let sql = "SELECT c.cust_id, st.region FROM customers c FULL JOIN \
                   (SELECT * FROM stores WHERE region = 'south') st \
                   ON c.home_store = st.store_id ORDER BY 2 NULLS LAST, 1 LIMIT 3";
        assert_eq!(
            values(&ctx, sql).await,
            vec!["101|south", "202|south", "101|NULL"]
        );
    }
}
