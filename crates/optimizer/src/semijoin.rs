//! Semi joins moved below the inner joins they filter.
//!
//! `WHERE o_orderkey IN (SELECT …)` over `customer, orders, lineitem` becomes a semi join
//! on top of the three-way join: every joined row is built and then most are thrown
//! away. The semi join only looks at `orders.o_orderkey`, so it can filter `orders` before
//! the joins instead (`(A ⋈ B) ⋉ S = (A ⋉ S) ⋈ B` when the keys are `A`'s). DataFusion
//! keeps such joins where decorrelation put them. TPC-H Q18 is the case in point: the
//! semi join keeps a few hundred of the 15 million orders at scale 10, and the join with
//! `lineitem` then has a few hundred rows to build on instead of the whole join of orders
//! and customers.
//!
//! The rule moves a semi join (equality keys only, no extra filter) through projections
//! that pass its keys through unchanged and inner joins one of whose sides holds all its
//! keys. An anti join (`NOT IN`, `NOT EXISTS`) stays above the joins: the same algebra
//! holds, but it drops only the rows the subquery names, usually a short list to exclude,
//! so below the joins it would probe nearly every row of its table, while above them it
//! probes only the rows the joins keep. In TPC-H Q16 it drops the parts offered by 56 of
//! 100,000 suppliers; moved down, it probed all 8 million offers at scale 10 before the
//! join with the chosen parts kept 15% of them. Not through filters: DataFusion's
//! filter pushdown moves them below the join again, and the plan would change on every pass. Rows are not changed,
//! only where they are dropped.

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, JoinType, Result};
use datafusion::logical_expr::{Expr, Join, LogicalPlan, Projection};
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
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        if !super::TarnOptions::get(&config.options(), |o| o.push_semi_joins_down) {
            return Ok(Transformed::no(plan));
        }
        super::replaced(plan, |plan| match plan {
            LogicalPlan::Join(join) => match movable_keys(join) {
                Some(keys) => push_into(&join.left, join, &keys),
                None => Ok(None),
            },
            _ => Ok(None),
        })
    }
}

/// The left-side key columns of a semi join that may move, or `None`.
fn movable_keys(join: &Join) -> Option<Vec<Column>> {
    if join.join_type != JoinType::LeftSemi
        || join.null_aware
        || join.filter.is_some()
        || join.on.is_empty()
    {
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

/// The semi join `join` with `input` as its left side.
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

/// An aggregation joined on one of its grouping columns, reduced to the groups the join
/// can match.
///
/// A correlated subquery such as TPC-H Q17's `l_quantity < (SELECT 0.2 * avg(l_quantity)
/// FROM lineitem WHERE l_partkey = p_partkey)` becomes a join with an aggregation of all
/// of `lineitem` by `l_partkey`: two million groups at scale 10, of which the join keeps
/// the two thousand parts the outer query's filter selects. Only rows of those groups can
/// change the answer, so the aggregation's input is first semi-joined with the keys the
/// other side can have. Those keys are taken from where the other side gets them: a
/// filtered scan of one table (`part` where `p_brand = … AND p_container = …`), reached
/// through projections and inner joins, so computing them again costs one filtered scan.
/// Without such a filter the reduction would not be selective, and nothing is changed.
///
/// Applies to inner and left semi joins with the aggregation on the right (the side
/// decorrelation puts it on), grouped by plain columns.
#[derive(Debug, Default)]
pub struct ReduceJoinedAggregate;

/// The alias of the key sets this rule adds, by which it knows its own work.
const KEYS_ALIAS: &str = "__tarn_join_keys";

impl OptimizerRule for ReduceJoinedAggregate {
    fn name(&self) -> &str {
        "tarn_reduce_joined_aggregate"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        if !super::TarnOptions::get(&config.options(), |o| o.reduce_joined_aggregates) {
            return Ok(Transformed::no(plan));
        }
        let LogicalPlan::Join(join) = &plan else {
            return Ok(Transformed::no(plan));
        };
        if !matches!(join.join_type, JoinType::Inner | JoinType::LeftSemi) {
            return Ok(Transformed::no(plan));
        }
        for (left_key, right_key) in &join.on {
            let (Expr::Column(left_key), Expr::Column(right_key)) = (left_key, right_key) else {
                continue;
            };
            let Some(keys) = key_source(&join.left, left_key).filter(|k| !volatile(k)) else {
                continue;
            };
            let Some(right) = reduce(&join.right, right_key, &keys, left_key, join)? else {
                continue;
            };
            let mut join = join.clone();
            join.right = Arc::new(right);
            return Ok(Transformed::yes(LogicalPlan::Join(join)));
        }
        Ok(Transformed::no(plan))
    }
}

/// The smallest part of `plan` that gives every value `key` can have in it (a superset):
/// through projections that pass `key` on and inner joins, down to a filtered scan of one
/// table or a scan semi-joined with one. `None` when there is no such part.
fn key_source(plan: &LogicalPlan, key: &Column) -> Option<Arc<LogicalPlan>> {
    let holds = |p: &LogicalPlan| p.schema().has_column(key);
    match plan {
        LogicalPlan::Projection(p)
            if holds(&p.input)
                && p.expr
                    .iter()
                    .any(|e| matches!(e, Expr::Column(c) if c == key)) =>
        {
            key_source(&p.input, key)
        }
        LogicalPlan::Join(j) if j.join_type == JoinType::Inner => {
            if holds(&j.left) {
                key_source(&j.left, key)
            } else if holds(&j.right) {
                key_source(&j.right, key)
            } else {
                None
            }
        }
        // A scan semi-joined with a filtered scan (Q20's `partsupp` of the `forest%` parts).
        LogicalPlan::Join(j)
            if j.join_type == JoinType::LeftSemi
                && holds(&j.left)
                && matches!(j.left.as_ref(), LogicalPlan::TableScan(_))
                && filtered_scan(&j.right) =>
        {
            Some(Arc::new(plan.clone()))
        }
        _ if filtered_scan(plan) => Some(Arc::new(plan.clone())),
        _ => None,
    }
}

/// Whether `plan` computes anything volatile (`random()`), which a second evaluation of
/// the key set would not reproduce.
fn volatile(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNode;
    plan.exists(|node| Ok(node.expressions().iter().any(Expr::is_volatile)))
        .unwrap_or(true)
}

/// Whether `plan` is one table's scan with a filter, under projections and aliases only:
/// cheap to compute again, and selective.
fn filtered_scan(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Projection(p) => filtered_scan(&p.input),
        LogicalPlan::SubqueryAlias(a) => filtered_scan(&a.input),
        LogicalPlan::Filter(f) => matches!(f.input.as_ref(), LogicalPlan::TableScan(_)),
        LogicalPlan::TableScan(t) => !t.filters.is_empty(),
        _ => false,
    }
}

/// `plan` (a join's right side) with the input of its aggregation semi-joined with
/// `keys`, when `key` is one of that aggregation's grouping columns passed up unchanged.
fn reduce(
    plan: &LogicalPlan,
    key: &Column,
    keys: &Arc<LogicalPlan>,
    key_in_keys: &Column,
    outer: &Join,
) -> Result<Option<LogicalPlan>> {
    // The same column one level down: found by position, as aliases rename qualifiers.
    let index = match plan.schema().maybe_index_of_column(key) {
        Some(i) => i,
        None => return Ok(None),
    };
    let (below, input) = match plan {
        LogicalPlan::SubqueryAlias(a) => {
            let (qualifier, field) = a.input.schema().qualified_field(index);
            (Column::from((qualifier, field)), &a.input)
        }
        LogicalPlan::Projection(p) => match p.expr.get(index) {
            Some(Expr::Column(c)) => (c.clone(), &p.input),
            Some(Expr::Alias(alias)) => match alias.expr.as_ref() {
                Expr::Column(c) => (c.clone(), &p.input),
                _ => return Ok(None),
            },
            _ => return Ok(None),
        },
        LogicalPlan::Filter(f) => (key.clone(), &f.input),
        LogicalPlan::Aggregate(aggregate) => {
            let Some(Expr::Column(grouped)) = aggregate.group_expr.get(index) else {
                return Ok(None);
            };
            if !aggregate
                .group_expr
                .iter()
                .all(|e| matches!(e, Expr::Column(_)))
                || already_reduced(&aggregate.input)
            {
                return Ok(None);
            }
            let keys =
                LogicalPlan::SubqueryAlias(datafusion::logical_expr::SubqueryAlias::try_new(
                    Arc::new(LogicalPlan::Projection(Projection::try_new(
                        vec![Expr::Column(key_in_keys.clone())],
                        Arc::clone(keys),
                    )?)),
                    KEYS_ALIAS,
                )?);
            let aliased = Column::new(Some(KEYS_ALIAS), key_in_keys.name.clone());
            let reduced = LogicalPlan::Join(Join::try_new(
                Arc::clone(&aggregate.input),
                Arc::new(keys),
                vec![(Expr::Column(grouped.clone()), Expr::Column(aliased))],
                None,
                JoinType::LeftSemi,
                datafusion::logical_expr::JoinConstraint::On,
                // A NULL group is kept exactly when the join itself can match NULLs.
                outer.null_equality,
                false,
            )?);
            return Ok(Some(
                plan.with_new_exprs(plan.expressions(), vec![reduced])?,
            ));
        }
        // A subquery shared by several copies: reducing this copy makes it differ from the
        // others, so it is computed on its own, without the wrapper.
        LogicalPlan::Extension(_) => {
            return match super::shared::shared_input(plan) {
                Some(input) => reduce(input, key, keys, key_in_keys, outer),
                None => Ok(None),
            };
        }
        _ => return Ok(None),
    };
    match reduce(input, &below, keys, key_in_keys, outer)? {
        Some(new_input) => Ok(Some(
            plan.with_new_exprs(plan.expressions(), vec![new_input])?,
        )),
        None => Ok(None),
    }
}

/// Whether an aggregation's input is already semi-joined with keys by this rule (the
/// semi join may since have moved down, see [`PushSemiJoinDown`]).
fn already_reduced(input: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNode;
    input
        .exists(|node| {
            Ok(matches!(node, LogicalPlan::SubqueryAlias(a) if a.alias.table() == KEYS_ALIAS))
        })
        .unwrap_or(true)
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
        // An anti join (it stays above the inner join), keys from the join's right side.
        "SELECT count(*) AS n, sum(l_quantity) AS q FROM orders JOIN lineitem \
           ON o_orderkey = l_orderkey \
         WHERE NOT EXISTS (SELECT 1 FROM customer WHERE c_custkey = o_custkey AND c_custkey < 9)",
        // NOT IN stays where it is (null-aware), and answers the same.
        "SELECT count(*) AS n FROM orders JOIN customer ON o_custkey = c_custkey \
         WHERE o_orderkey NOT IN (SELECT l_orderkey FROM lineitem WHERE l_quantity > 45)",
    ];

    /// TPC-H Q17's shape (a correlated average per part of the filtered parts), and Q2's
    /// (a correlated minimum over a join).
    const AGGREGATES: [&str; 2] = [
        "SELECT sum(l_quantity) AS q, count(*) AS n FROM lineitem, orders \
         WHERE o_orderkey = l_orderkey AND o_custkey < 6 \
           AND l_quantity < (SELECT 1.2 * avg(l_quantity) FROM lineitem l2 \
                             WHERE l2.l_orderkey = o_orderkey)",
        "SELECT c_name, o_orderkey FROM customer, orders \
         WHERE c_custkey = o_custkey AND c_name LIKE 'customer 1%' \
           AND o_orderkey = (SELECT min(o2.o_orderkey) FROM orders o2, lineitem \
                             WHERE o2.o_orderkey = l_orderkey AND o2.o_custkey = c_custkey) \
         ORDER BY o_orderkey",
    ];

    fn context_with_all(rules: bool) -> SessionContext {
        if !rules {
            return context(false);
        }
        let ctx = context(true);
        let state = SessionStateBuilder::new_from_existing(ctx.state())
            .with_optimizer_rule(Arc::new(ReduceJoinedAggregate))
            .build();
        // The new state shares the tables' catalog.
        SessionContext::new_with_state(state)
    }

    #[tokio::test]
    async fn joined_aggregations_read_only_the_groups_the_join_keeps() {
        let (plain, reduced) = (context_with_all(false), context_with_all(true));
        for sql in AGGREGATES {
            let (_, expected) = run(&plain, sql).await;
            let (plan, answer) = run(&reduced, sql).await;
            assert!(
                expected.lines().count() > 4,
                "{sql} returns rows:\n{expected}"
            );
            assert_eq!(answer, expected, "{sql}");
            assert_eq!(
                plan.matches(&format!("SubqueryAlias: {KEYS_ALIAS}"))
                    .count(),
                1,
                "the aggregation's input is reduced once:\n{plan}"
            );
        }
        // Without a filter on the side the keys come from, nothing is reduced.
        let (plan, _) = run(
            &reduced,
            "SELECT count(*) FROM orders WHERE o_orderkey < (SELECT max(l_orderkey) FROM lineitem \
             WHERE l_orderkey = o_orderkey)",
        )
        .await;
        assert!(!plan.contains(KEYS_ALIAS), "{plan}");
        // Nor when the filter is volatile: a second evaluation would pick other keys.
        let (plan, _) = run(
            &reduced,
            "SELECT count(*) FROM orders WHERE random() < 0.5 AND o_orderkey < \
             (SELECT max(l_orderkey) FROM lineitem WHERE l_orderkey = o_orderkey)",
        )
        .await;
        assert!(!plan.contains(KEYS_ALIAS), "{plan}");
    }

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
        // The anti join stays above the inner join it would narrow little.
        let (kept, _) = run(&moved, QUERIES[1]).await;
        let anti = |plan: &str| depth(plan, "LeftAnti Join").or(depth(plan, "RightAnti Join"));
        assert!(anti(&kept).is_some(), "{kept}");
        assert!(anti(&kept) < inner(&kept), "{kept}");
    }
}
