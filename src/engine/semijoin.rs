//! Semi and anti joins moved below the inner joins they filter.
//!
//! `WHERE o_orderkey IN (SELECT …)` over `customer, orders, lineitem` becomes a semi join
//! on top of the three-way join: every joined row is built and then most are thrown
//! away. The semi join only looks at `orders.o_orderkey`, so it can filter `orders` before
//! the joins instead (`(A ⋈ B) ⋉ S = (A ⋉ S) ⋈ B` when the keys are `A`'s); the same holds
//! for an anti join. DataFusion keeps such joins where decorrelation put them. TPC-H Q18
//! is the case in point: the semi join keeps a few hundred of the 15 million orders at
//! scale 10, and the join with `lineitem` then has a few hundred rows to build on instead
//! of the whole join of orders and customers.
//!
//! The rule moves a semi or anti join (equality keys only, no extra filter, not the
//! null-aware form of `NOT IN`) through filters, projections that pass its keys through
//! unchanged, and inner joins one of whose sides holds all its keys. Rows are not changed,
//! only where they are dropped.

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, JoinType, Result};
use datafusion::logical_expr::{Expr, Filter, Join, LogicalPlan, Projection};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The optimizer rule (see the module documentation).
#[derive(Debug, Default)]
pub struct PushSemiJoinDown;

impl OptimizerRule for PushSemiJoinDown {
    fn name(&self) -> &str {
        "tarn_push_semi_join_down"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Join(join) = &plan else {
            return Ok(Transformed::no(plan));
        };
        let Some(keys) = movable_keys(join) else {
            return Ok(Transformed::no(plan));
        };
        match push_into(&join.left, join, &keys)? {
            Some(moved) => Ok(Transformed::yes(moved)),
            None => Ok(Transformed::no(plan)),
        }
    }
}

/// The left-side key columns of a semi or anti join that may move, or `None`.
fn movable_keys(join: &Join) -> Option<Vec<Column>> {
    let kind = matches!(join.join_type, JoinType::LeftSemi | JoinType::LeftAnti);
    if !kind || join.null_aware || join.filter.is_some() || join.on.is_empty() {
        return None;
    }
    join.on
        .iter()
        .map(|(left, _)| match left {
            Expr::Column(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

/// `join` applied below `input` (its left side), one step down; `None` when it cannot go.
fn push_into(input: &LogicalPlan, join: &Join, keys: &[Column]) -> Result<Option<LogicalPlan>> {
    let holds = |plan: &LogicalPlan| keys.iter().all(|k| plan.schema().has_column(k));
    Ok(Some(match input {
        LogicalPlan::Filter(filter) => LogicalPlan::Filter(Filter::try_new(
            filter.predicate.clone(),
            Arc::new(semi_join(Arc::clone(&filter.input), join)?),
        )?),
        LogicalPlan::Projection(projection)
            if holds(&projection.input)
                && keys.iter().all(|k| {
                    projection
                        .expr
                        .iter()
                        .any(|e| matches!(e, Expr::Column(c) if c == k))
                }) =>
        {
            LogicalPlan::Projection(Projection::try_new(
                projection.expr.clone(),
                Arc::new(semi_join(Arc::clone(&projection.input), join)?),
            )?)
        }
        LogicalPlan::Join(inner) if inner.join_type == JoinType::Inner => {
            let (left, right) = if holds(&inner.left) {
                (
                    Arc::new(semi_join(Arc::clone(&inner.left), join)?),
                    Arc::clone(&inner.right),
                )
            } else if holds(&inner.right) {
                (
                    Arc::clone(&inner.left),
                    Arc::new(semi_join(Arc::clone(&inner.right), join)?),
                )
            } else {
                return Ok(None);
            };
            LogicalPlan::Join(Join::try_new(
                left,
                right,
                inner.on.clone(),
                inner.filter.clone(),
                inner.join_type,
                inner.join_constraint,
                inner.null_equality,
                inner.null_aware,
            )?)
        }
        _ => return Ok(None),
    }))
}

/// The semi (or anti) join `join` with `input` as its left side.
fn semi_join(input: Arc<LogicalPlan>, join: &Join) -> Result<LogicalPlan> {
    Ok(LogicalPlan::Join(Join::try_new(
        input,
        Arc::clone(&join.right),
        join.on.clone(),
        None,
        join.join_type,
        join.join_constraint,
        join.null_equality,
        false,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    fn context(with_rule: bool) -> SessionContext {
        let mut builder = SessionStateBuilder::new().with_default_features();
        if with_rule {
            builder = builder.with_optimizer_rule(Arc::new(PushSemiJoinDown));
        }
        let ctx = SessionContext::new_with_state(builder.build());
        let table = |columns: Vec<(&str, Vec<i64>)>| {
            let schema = Arc::new(Schema::new(
                columns
                    .iter()
                    .map(|(n, _)| Field::new(*n, DataType::Int64, true))
                    .collect::<Vec<_>>(),
            ));
            let arrays = columns
                .into_iter()
                .map(|(_, v)| Arc::new(Int64Array::from(v)) as _)
                .collect();
            RecordBatch::try_new(schema, arrays).expect("batch")
        };
        // 200 orders of 40 customers, 1 to 4 lines each, quantities 1..=50.
        let orders: Vec<i64> = (1..=200).collect();
        let mut l_order = Vec::new();
        let mut l_qty = Vec::new();
        for o in &orders {
            for line in 0..(o % 4 + 1) {
                l_order.push(*o);
                l_qty.push((o * 7 + line * 13) % 50 + 1);
            }
        }
        let customers = table(vec![("c_custkey", (1..=40).collect())]);
        let names = StringArray::from_iter_values((1..=40).map(|c| format!("customer {c}")));
        let customers = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("c_custkey", DataType::Int64, true),
                Field::new("c_name", DataType::Utf8, true),
            ])),
            vec![Arc::clone(customers.column(0)), Arc::new(names)],
        )
        .expect("customers");
        ctx.register_batch("customer", customers).expect("register");
        ctx.register_batch(
            "orders",
            table(vec![
                ("o_orderkey", orders.clone()),
                ("o_custkey", orders.iter().map(|o| o % 40 + 1).collect()),
            ]),
        )
        .expect("register");
        ctx.register_batch(
            "lineitem",
            table(vec![("l_orderkey", l_order), ("l_quantity", l_qty)]),
        )
        .expect("register");
        ctx
    }

    const QUERIES: [&str; 3] = [
        // TPC-H Q18's shape.
        "SELECT c_name, o_orderkey, sum(l_quantity) AS q FROM customer, orders, lineitem \
         WHERE o_orderkey IN (SELECT l_orderkey FROM lineitem GROUP BY l_orderkey \
                              HAVING sum(l_quantity) > 100) \
           AND c_custkey = o_custkey AND o_orderkey = l_orderkey \
         GROUP BY c_name, o_orderkey ORDER BY o_orderkey",
        // An anti join, and keys from the right side of the inner join.
        "SELECT count(*) AS n, sum(l_quantity) AS q FROM orders JOIN lineitem \
           ON o_orderkey = l_orderkey \
         WHERE NOT EXISTS (SELECT 1 FROM customer WHERE c_custkey = o_custkey AND c_custkey < 9)",
        // NOT IN stays where it is (null-aware), and answers the same.
        "SELECT count(*) AS n FROM orders JOIN customer ON o_custkey = c_custkey \
         WHERE o_orderkey NOT IN (SELECT l_orderkey FROM lineitem WHERE l_quantity > 45)",
    ];

    async fn run(ctx: &SessionContext, sql: &str) -> (String, String) {
        let df = ctx.sql(sql).await.expect("plan");
        let plan = df.clone().into_optimized_plan().expect("optimize");
        let batches = df.collect().await.expect("run");
        (
            plan.display_indent().to_string(),
            arrow::util::pretty::pretty_format_batches(&batches)
                .expect("format")
                .to_string(),
        )
    }

    #[tokio::test]
    async fn answers_are_unchanged_and_the_semi_join_filters_orders_first() {
        let (plain, moved) = (context(false), context(true));
        for sql in QUERIES {
            let (_, expected) = run(&plain, sql).await;
            let (_, answer) = run(&moved, sql).await;
            assert!(
                expected.lines().count() > 4,
                "{sql} returns rows:\n{expected}"
            );
            assert_eq!(answer, expected, "{sql}");
        }
        // Q18: the semi join now sits directly on the orders scan, below both inner joins.
        let (before, _) = run(&plain, QUERIES[0]).await;
        let (after, _) = run(&moved, QUERIES[0]).await;
        let depth = |plan: &str, what: &str| {
            plan.lines()
                .find(|l| l.trim_start().starts_with(what))
                .map(|l| l.len() - l.trim_start().len())
        };
        let semi = |plan: &str| depth(plan, "LeftSemi Join").or(depth(plan, "RightSemi Join"));
        let inner = |plan: &str| depth(plan, "Inner Join");
        assert!(semi(&before) < inner(&before), "before:\n{before}");
        assert!(semi(&after) > inner(&after), "after:\n{after}");
        assert!(
            after.contains("LeftSemi Join: orders.o_orderkey = __correlated_sq_1.l_orderkey"),
            "{after}"
        );
    }
}
