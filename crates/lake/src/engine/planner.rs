//! The engine's query planner: Tarn's ([`tarn_optimizer::TarnQueryPlanner`]), after
//! noting in the query's probe the materialized views whose storage the optimised plan
//! reads (the rollup rewrite chose them), for the query history.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::error::Result;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use tarn_optimizer::TarnQueryPlanner;

/// Tarn's query planner, noting the views a query reads.
#[derive(Debug, Default)]
pub(crate) struct EnginePlanner {
    inner: TarnQueryPlanner,
}

#[async_trait]
impl QueryPlanner for EnginePlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        note_views(logical_plan, session_state);
        self.inner
            .create_physical_plan(logical_plan, session_state)
            .await
    }
}

/// Notes in the query's probe (if it has one) the materialized views whose storage the
/// optimised plan reads: the rollup rewrite chose them.
fn note_views(plan: &LogicalPlan, session_state: &dyn Session) {
    let Some(probe) = session_state
        .config()
        .get_extension::<crate::probe::QueryProbe>()
    else {
        return;
    };
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Some(view) = crate::rollup::view_of_storage(scan.table_name.table())
        {
            let name = match scan.table_name.schema() {
                Some(db) => format!("{db}.{view}"),
                None => view.to_string(),
            };
            probe.answered_by(name);
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
}
