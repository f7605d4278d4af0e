//! Helpers for the optimizer rules' tests, compiled only for tests (`#[cfg(test)] mod
//! testing`): a failing step panics with the step's name, which is how a test fails.

use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::TarnOptions;

/// A session with DataFusion's defaults and Tarn's optimizer rules (logical and physical)
/// and settings.
pub(super) fn session() -> SessionContext {
    let config = SessionConfig::new().with_option_extension(TarnOptions::default());
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_optimizer_rules(super::optimizer_rules())
        .with_physical_optimizer_rules(super::physical_optimizer_rules())
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

/// The rows of `sql`, each as its values joined by `|` (nulls as `NULL`), in the order
/// the query gives them.
pub(super) async fn values(ctx: &SessionContext, sql: &str) -> Vec<String> {
    let batches = ctx
        .sql(sql)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run");
    let options = arrow::util::display::FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in &batches {
        let columns: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| {
                arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options)
                    .expect("formatter")
            })
            .collect();
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = columns.iter().map(|c| c.value(row).to_string()).collect();
            out.push(cells.join("|"));
        }
    }
    out
}

/// [`values`], sorted: for queries whose order is not defined.
pub(super) async fn sorted_values(ctx: &SessionContext, sql: &str) -> Vec<String> {
    let mut out = values(ctx, sql).await;
    out.sort();
    out
}
