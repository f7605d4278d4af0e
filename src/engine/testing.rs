//! Helpers for the optimizer rules' tests, compiled only for tests (`#[cfg(test)] mod
//! testing`): a failing step panics with the step's name, which is how a test fails.

use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::TarnOptions;

/// A session with DataFusion's defaults and Tarn's optimizer rules and settings.
pub(super) fn session() -> SessionContext {
    let config = SessionConfig::new().with_option_extension(TarnOptions::default());
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_optimizer_rules(super::optimizer_rules())
        .build();
    SessionContext::new_with_state(state)
}

/// The result of `sql` as the lines of a printed table.
pub(super) async fn rows(ctx: &SessionContext, sql: &str) -> Vec<String> {
    let batches = ctx
        .sql(sql)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run");
    let shown = arrow::util::pretty::pretty_format_batches(&batches).expect("format");
    shown.to_string().lines().map(str::to_string).collect()
}

/// The plan of `sql` after Tarn's optimizer rules.
pub(super) async fn optimized(ctx: &SessionContext, sql: &str) -> LogicalPlan {
    ctx.sql(sql)
        .await
        .expect("plan")
        .into_optimized_plan()
        .expect("optimize")
}
