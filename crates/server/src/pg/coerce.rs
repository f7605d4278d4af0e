//! Postgres' untyped literals, where DataFusion would refuse the comparison.
//!
//! In Postgres a quoted literal has no type until it meets one: `indisprimary = 'f'`
//! compares a boolean with the boolean `false`. DataFusion types `'f'` as text and refuses
//! to compare it with a boolean; clients' catalog statements (SQLAlchemy's index
//! reflection) write exactly that. This analyzer rule, installed in Postgres sessions
//! before type coercion, reads such a literal as the boolean Postgres would. Other
//! comparisons are left to DataFusion's coercion, which already casts text literals to
//! numbers, dates and timestamps.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator, lit};
use datafusion::optimizer::AnalyzerRule;

/// The rule (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct BooleanLiterals;

impl AnalyzerRule for BooleanLiterals {
    fn name(&self) -> &str {
        "tarn_postgres_boolean_literals"
    }

    fn analyze(&self, plan: LogicalPlan, _: &ConfigOptions) -> DfResult<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            let mut schema = DFSchema::empty();
            for input in node.inputs() {
                schema.merge(input.schema());
            }
            node.map_expressions(|e| e.transform_up(|e| Ok(as_boolean(e, &schema))))
        })
        .map(|t| t.data)
    }
}

/// `expr` with a text literal compared to a boolean read as a boolean.
fn as_boolean(expr: Expr, schema: &DFSchema) -> Transformed<Expr> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &expr else {
        return Transformed::no(expr);
    };
    if !matches!(
        op,
        Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq
            | Operator::IsDistinctFrom
            | Operator::IsNotDistinctFrom
    ) {
        return Transformed::no(expr);
    }
    let is_boolean = |e: &Expr| matches!(e.get_type(schema), Ok(DataType::Boolean));
    let (left, right) = match (boolean_text(left), boolean_text(right)) {
        (None, Some(value)) if is_boolean(left) => (left.as_ref().clone(), lit(value)),
        (Some(value), None) if is_boolean(right) => (lit(value), right.as_ref().clone()),
        _ => return Transformed::no(expr),
    };
    Transformed::yes(Expr::BinaryExpr(BinaryExpr::new(
        Box::new(left),
        *op,
        Box::new(right),
    )))
}

/// The boolean a text literal spells in Postgres (`t`, `false`, `yes`, `off`, `1` …).
fn boolean_text(expr: &Expr) -> Option<bool> {
    let Expr::Literal(
        ScalarValue::Utf8(Some(text))
        | ScalarValue::Utf8View(Some(text))
        | ScalarValue::LargeUtf8(Some(text)),
        _,
    ) = expr
    else {
        return None;
    };
    match text.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Some(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn text_compared_with_a_boolean_is_a_boolean_and_text_with_text_is_text() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (flag BOOLEAN, kind TEXT) AS VALUES (true, 'f'), (false, 'p')")
            .await
            .unwrap();
        let sql = "SELECT kind FROM t WHERE flag = 'f' AND kind <> 'f'";
        let plan = ctx.state().create_logical_plan(sql).await.unwrap();
        let analyzed = BooleanLiterals
            .analyze(plan, &ConfigOptions::default())
            .unwrap()
            .display_indent()
            .to_string();
        assert!(analyzed.contains("t.flag = Boolean(false)"), "{analyzed}");
        assert!(analyzed.contains("t.kind != Utf8(\"f\")"), "{analyzed}");

        // Installed before type coercion, the statement runs with Postgres' answer.
        let state = ctx.state();
        let mut rules = state.analyzer().rules.clone();
        rules.insert(0, Arc::new(BooleanLiterals));
        let ctx = SessionContext::new_with_state(
            SessionStateBuilder::new_from_existing(state)
                .with_analyzer_rules(rules)
                .build(),
        );
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(text.contains("| p    |"), "{text}");
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    }
}
