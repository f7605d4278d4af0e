//! `IN (subquery)` gives SQL's three-valued answer wherever its NULL and FALSE differ.
//!
//! DataFusion plans `x [NOT] IN (SELECT k …)` as a semi or null-aware anti join when it
//! is a condition of a filter of its own, and anywhere else (under `OR`, `NOT`, `CASE`,
//! `IS …`) as a mark join, whose mark is true or false: never NULL. SQL's `x IN (…)` is
//! NULL when no `k` equals `x` but `x` is NULL (and the subquery has rows) or some `k` is
//! NULL. Where NULL and FALSE act alike (a filter keeps neither, and `AND` / `OR` of
//! conditions that are true or not pass that on) the mark is exact; elsewhere it is not:
//! `x NOT IN (…) OR w > 4` kept rows whose `x` is NULL, since `NOT mark` is true where SQL
//! gives `NOT NULL`, which is NULL.
//!
//! This rule, which runs before DataFusion decorrelates subqueries, writes each `IN`
//! subquery whose answer may be NULL and whose context tells NULL from FALSE as
//!
//! ```text
//! CASE WHEN x IN (S)                         THEN TRUE   -- a k equals x
//!      WHEN NOT EXISTS (S)                   THEN FALSE  -- no rows at all
//!      WHEN x IS NULL                        THEN NULL
//!      WHEN EXISTS (S WHERE k IS NULL)       THEN NULL
//!      ELSE FALSE END
//! ```
//!
//! (negated for `NOT IN`): each condition is a mark join, whose true or false is exact,
//! and the branches are SQL's definition of `IN`. A branch is left out where the
//! schema says `x` or `k` is never NULL, and the whole rewrite where both are.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, Result};
use datafusion::logical_expr::expr::{Exists, InSubquery};
use datafusion::logical_expr::{
    BinaryExpr, Expr, ExprSchemable, Filter, LogicalPlan, LogicalPlanBuilder, Operator, Subquery,
    lit, when,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The rule; see the module documentation.
#[derive(Debug, Default)]
pub struct NullAwareIn;

impl OptimizerRule for NullAwareIn {
    fn name(&self) -> &str {
        "tarn_null_aware_in"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        plan.transform_down_with_subqueries(|node| match node {
            LogicalPlan::Filter(filter) => rewrite_filter(filter),
            other => Ok(Transformed::no(other)),
        })
    }
}

fn rewrite_filter(filter: Filter) -> Result<Transformed<LogicalPlan>> {
    let schema = Arc::clone(filter.input.schema());
    let predicate = positive(filter.predicate.clone(), &schema, true)?;
    if !predicate.transformed {
        return Ok(Transformed::no(LogicalPlan::Filter(filter)));
    }
    Ok(Transformed::yes(LogicalPlan::Filter(Filter::try_new(
        predicate.data,
        filter.input,
    )?)))
}

/// `expr`, evaluated where only TRUE counts (a filter's condition, or an operand of `AND`
/// or `OR` there), with its `IN` subqueries made exact. At the top (`top`), a condition
/// `[NOT] x IN (…)` of its own is left to DataFusion's semi and null-aware anti joins.
fn positive(expr: Expr, schema: &DFSchema, top: bool) -> Result<Transformed<Expr>> {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if op == Operator::And || (op == Operator::Or) =>
        {
            // Under `AND`, each side is still a condition of the filter of its own.
            let own = top && op == Operator::And;
            let l = positive(*left, schema, own)?;
            let r = positive(*right, schema, own)?;
            let transformed = l.transformed || r.transformed;
            let e = Expr::BinaryExpr(BinaryExpr::new(Box::new(l.data), op, Box::new(r.data)));
            Ok(if transformed {
                Transformed::yes(e)
            } else {
                Transformed::no(e)
            })
        }
        Expr::InSubquery(ref s) if top || !s.negated => Ok(Transformed::no(expr)),
        Expr::Not(ref inner) if top && matches!(inner.as_ref(), Expr::InSubquery(_)) => {
            Ok(Transformed::no(expr))
        }
        other => anywhere(other, schema),
    }
}

/// `expr` with every `IN` subquery in it made exact (no context makes NULL and FALSE
/// alike here).
fn anywhere(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    expr.transform_down(|e| match e {
        Expr::InSubquery(s) => match three_valued(&s, schema)? {
            // The replacement's own `IN` is exact where it stands: not visited again.
            Some(exact) => Ok(Transformed::new(exact, true, TreeNodeRecursion::Jump)),
            None => Ok(Transformed::no(Expr::InSubquery(s))),
        },
        // A subquery's own plan is visited as a plan of its own.
        other => Ok(Transformed::no(other)),
    })
}

/// `x [NOT] IN (S)` as its three-valued definition (see the module documentation), or
/// `None` where the two-valued mark is exact already (neither side can be NULL) or `x`
/// cannot be evaluated more than once (volatile).
fn three_valued(s: &InSubquery, schema: &DFSchema) -> Result<Option<Expr>> {
    let x = s.expr.as_ref();
    if x.is_volatile() {
        return Ok(None);
    }
    let plan = s.subquery.subquery.as_ref();
    let Some(k) = plan.head_output_expr()? else {
        return Ok(None);
    };
    let x_nullable = x.nullable(schema).unwrap_or(true);
    let k_nullable = k.nullable(plan.schema()).unwrap_or(true);
    if !x_nullable && !k_nullable {
        return Ok(None);
    }
    let matched = Expr::InSubquery(InSubquery::new(
        Box::new(x.clone()),
        s.subquery.clone(),
        false,
    ));
    let rows = Expr::Exists(Exists::new(s.subquery.clone(), false));
    let mut case = when(matched, lit(true)).when(Expr::Not(Box::new(rows)), lit(false));
    let null = lit(datafusion::common::ScalarValue::Boolean(None));
    if x_nullable {
        case = case.when(x.clone().is_null(), null.clone());
    }
    if k_nullable {
        let nulls = LogicalPlanBuilder::from(plan.clone())
            .filter(k.is_null())?
            .build()?;
        let with_nulls = Subquery {
            subquery: Arc::new(nulls),
            outer_ref_columns: s.subquery.outer_ref_columns.clone(),
            spans: s.subquery.spans.clone(),
        };
        case = case.when(Expr::Exists(Exists::new(with_nulls, false)), null);
    }
    let in_set = case.otherwise(lit(false))?;
    Ok(Some(if s.negated {
        Expr::Not(Box::new(in_set))
    } else {
        in_set
    }))
}

#[cfg(test)]
mod tests {
    // A test fails by panicking; none of this is compiled outside tests.
    use crate::testing::{session, sorted_values};
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;
    use std::sync::Arc;

    fn table(ctx: &SessionContext, name: &str, columns: &[(&str, Vec<Option<i64>>)]) {
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|(n, _)| Field::new(*n, DataType::Int64, true))
                .collect::<Vec<_>>(),
        ));
        let arrays = columns
            .iter()
            .map(|(_, v)| Arc::new(Int64Array::from(v.clone())) as _)
            .collect();
        let batch = RecordBatch::try_new(Arc::clone(&schema), arrays).expect("batch");
        let table = MemTable::try_new(schema, vec![vec![batch]]).expect("table");
        ctx.register_table(name, Arc::new(table)).expect("register");
    }

    /// Issue's case: returns (ret_id, sale_id, rqty) and sales (sale_id, qty).
    fn context() -> SessionContext {
        let ctx = session();
        table(
            &ctx,
            "returns",
            &[
                ("ret_id", vec![Some(1), Some(2), Some(3), Some(4)]),
                ("sale_id", vec![Some(1), None, Some(2), None]),
                ("rqty", vec![Some(1), Some(2), Some(9), Some(3)]),
            ],
        );
        table(
            &ctx,
            "sales",
            &[
                ("sale_id", vec![Some(1), Some(2), Some(3), Some(4), Some(5)]),
                ("qty", vec![Some(20), Some(3), Some(30), Some(1), Some(16)]),
                ("nullable", vec![Some(1), None, Some(3), None, Some(5)]),
            ],
        );
        ctx
    }

    #[tokio::test]
    async fn not_in_under_or_is_null_for_null_keys() {
        let ctx = context();
        // sales with qty > 15: sale_id 1, 3, 5. Return 1 (sale 1): NOT IN false, rqty 1 ->
        // false. Returns 2 and 4 (sale NULL): NOT IN is NULL, rqty 2 and 3 -> NULL, not
        // kept. Return 3 (sale 2): NOT IN true -> kept. One row.
        let sql = "SELECT ret_id FROM returns x WHERE x.sale_id NOT IN \
                   (SELECT s.sale_id FROM sales s WHERE s.qty > 15) OR x.rqty > 4";
        assert_eq!(sorted_values(&ctx, sql).await, vec!["3"]);
        // A NULL among the keys: NOT IN is never true (NULL where no key matches).
        let sql = "SELECT ret_id FROM returns x WHERE x.sale_id NOT IN \
                   (SELECT s.nullable FROM sales s) OR x.rqty > 4";
        assert_eq!(sorted_values(&ctx, sql).await, vec!["3"]);
        // An empty subquery: NOT IN is true even for a NULL key.
        let sql = "SELECT ret_id FROM returns x WHERE x.sale_id NOT IN \
                   (SELECT s.sale_id FROM sales s WHERE s.qty > 100) OR x.rqty > 100";
        assert_eq!(sorted_values(&ctx, sql).await, vec!["1", "2", "3", "4"]);
    }

    #[tokio::test]
    async fn in_as_a_value_is_three_valued() {
        let ctx = context();
        // NULL for NULL keys, and for unmatched keys when the set holds a NULL.
        let sql = "SELECT ret_id FROM returns x WHERE \
                   (x.sale_id IN (SELECT s.nullable FROM sales s)) IS NULL";
        assert_eq!(sorted_values(&ctx, sql).await, vec!["2", "3", "4"]);
        // NOT (… IN …) under OR, and a correlated subquery.
        let sql = "SELECT ret_id FROM returns x WHERE NOT (x.sale_id IN \
                   (SELECT s.sale_id FROM sales s WHERE s.qty > x.rqty)) OR x.ret_id = 4";
        // qty > rqty: return 1 (rqty 1): sales 1,2,3,5 -> sale 1 in -> false; return 3
        // (rqty 9): sales 1,3,5 -> sale 2 not in -> true; returns 2, 4: NULL key -> NULL,
        // but ret 4 passes by its own condition.
        assert_eq!(sorted_values(&ctx, sql).await, vec!["3", "4"]);
        // Positive IN under OR is left to the mark join (NULL and FALSE alike there).
        let sql = "SELECT ret_id FROM returns x WHERE x.sale_id IN \
                   (SELECT s.sale_id FROM sales s WHERE s.qty > 15) OR x.rqty > 8";
        assert_eq!(sorted_values(&ctx, sql).await, vec!["1", "3"]);
    }
}
