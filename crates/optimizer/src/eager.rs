//! Aggregating before joining the dimension tables a query groups by (eager aggregation).
//!
//! A dashboard query sums a fact table's measures by a dimension's attributes:
//! `SELECT c.name, c.city, sum(s.amount) FROM sales s JOIN customers c ON s.customer =
//! c.id GROUP BY c.name, c.city`. Joined first, every fact row carries the dimension's
//! columns (long strings among them) into a grouping on all of them. Summed first by the
//! join key (`s.customer`), there is one row per key to join, and the grouping on the
//! dimension's columns then adds up those sums. The answer is the same whatever the keys'
//! uniqueness: each pair of a fact row and a dimension row it joins adds the fact row's
//! value to the pair's group, and each dimension row adds the sum over the fact rows its
//! key joins. TPC-H Q10 groups 1.1M joined order lines by seven customer columns; by the
//! orders' customer first, 380K sums are joined and grouped.
//!
//! The rule applies to an aggregation over a tree of inner joins where:
//! - every aggregate is `sum`, `min` or `max` of values from the inputs other than the
//!   dimensions (no `DISTINCT`, `FILTER` or `ORDER BY`), and every grouping is a column;
//! - the dimensions are the inputs that are plain table scans (no filter: every fact row
//!   finds its dimension row, so the join does not already cut the rows down), whose
//!   columns the aggregation groups by, and which hold none of the aggregated values;
//! - the other inputs (the facts) are joined among themselves, and to the dimensions only
//!   by equalities of columns.
//!
//! The facts are joined as they were, then aggregated by their columns that the dimension
//! equalities and the grouping name; the dimensions are joined to that, and the grouping
//! adds up the partial results (`sum` of sums, `min` of minimums, `max` of maximums), cast
//! back to the written result types. `--datafusion-config tarn.aggregate_before_joins=false`
//! turns the rule off.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result};
use datafusion::functions_aggregate::expr_fn::{max, min, sum};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, Projection, cast, col};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use super::TarnOptions;
use super::joinorder::{Classes, Tree, is_reorderable, join};

/// Names of the partial and final aggregates the rule adds.
const PARTIAL: &str = "__tarn_partial_";
const FINAL: &str = "__tarn_final_";

/// The rule; see the module documentation.
#[derive(Debug, Default)]
pub struct AggregateBeforeJoins;

impl OptimizerRule for AggregateBeforeJoins {
    fn name(&self) -> &str {
        "tarn_aggregate_before_joins"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        if !TarnOptions::get(&config.options(), |o| o.aggregate_before_joins) {
            return Ok(Transformed::no(plan));
        }
        super::replaced(plan, |plan| match plan {
            LogicalPlan::Aggregate(aggregate) => eager(aggregate),
            _ => Ok(None),
        })
    }
}

/// The aggregates the rule splits: `sum`, `min`, `max`, plain.
fn splittable(e: &Expr) -> Option<&AggregateFunction> {
    let f = match e {
        Expr::AggregateFunction(f) => f,
        Expr::Alias(a) => return splittable(&a.expr),
        _ => return None,
    };
    let p = &f.params;
    let plain = !p.distinct && p.filter.is_none() && p.order_by.is_empty();
    (plain && matches!(f.func.name(), "sum" | "min" | "max")).then_some(f)
}

/// A dimension: a table scan with no filter.
fn plain_scan(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::TableScan(scan) => scan.filters.is_empty() && scan.fetch.is_none(),
        LogicalPlan::SubqueryAlias(alias) => plain_scan(&alias.input),
        _ => false,
    }
}

/// An aggregation, possibly under projections or an alias.
fn is_aggregate(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Aggregate(_) => true,
        LogicalPlan::Projection(p) => is_aggregate(&p.input),
        LogicalPlan::SubqueryAlias(a) => is_aggregate(&a.input),
        _ => false,
    }
}

/// The plan described in the module documentation, or `None` where it does not apply.
fn eager(aggregate: &Aggregate) -> Result<Option<LogicalPlan>> {
    let input = aggregate.input.as_ref();
    let below = match input {
        LogicalPlan::Projection(p) => p.input.as_ref(),
        other => other,
    };
    if !is_reorderable(below) || aggregate.aggr_expr.is_empty() {
        return Ok(None);
    }
    // The partial aggregation this rule made is not split again: the facts' keys are often
    // nearly unique (order lines by order), where a further level would gain nothing.
    if aggregate
        .aggr_expr
        .iter()
        .any(|e| matches!(e, Expr::Alias(a) if a.name.starts_with(PARTIAL)))
    {
        return Ok(None);
    }
    let functions: Option<Vec<&AggregateFunction>> =
        aggregate.aggr_expr.iter().map(splittable).collect();
    let Some(functions) = functions else {
        return Ok(None);
    };
    let groups: Option<Vec<&Column>> = aggregate
        .group_expr
        .iter()
        .map(|e| match e {
            Expr::Column(c) => Some(c),
            _ => None,
        })
        .collect();
    let Some(groups) = groups else {
        return Ok(None);
    };
    let mut tree = Tree::default();
    tree.collect(input);
    // A condition like `random() < 0.5` would be evaluated on other rows.
    if tree.predicates.iter().any(Expr::is_volatile) {
        return Ok(None);
    }
    let leaves = &tree.leaves;
    let holds = |i: usize, c: &Column| leaves[i].schema().has_column(c);
    let aggregated: HashSet<usize> = functions
        .iter()
        .flat_map(|f| f.params.args.iter().flat_map(|a| a.column_refs()))
        .flat_map(|c| (0..leaves.len()).filter(move |i| holds(*i, c)))
        .collect();
    if aggregated.is_empty() {
        return Ok(None);
    }
    let dimension: Vec<bool> = (0..leaves.len())
        .map(|i| {
            !aggregated.contains(&i) && plain_scan(&leaves[i]) && groups.iter().any(|c| holds(i, c))
        })
        .collect();
    let facts: Vec<usize> = (0..leaves.len()).filter(|i| !dimension[*i]).collect();
    // Nothing to join after aggregating, or a plan this rule made (its facts an aggregate).
    if facts.len() == leaves.len() || facts.iter().all(|i| is_aggregate(&leaves[*i])) {
        return Ok(None);
    }
    let owner = |c: &Column| (0..leaves.len()).find(|i| holds(*i, c));
    // The facts' columns the dimensions are joined on, and the conditions of each side.
    let mut keys: Vec<Column> = Vec::new();
    let (mut inner, mut outer) = (Vec::new(), Vec::new());
    for p in &tree.predicates {
        let sides: Option<Vec<usize>> = p.column_refs().into_iter().map(owner).collect();
        let Some(sides) = sides else {
            return Ok(None);
        };
        if sides.iter().all(|i| !dimension[*i]) {
            inner.push(p.clone());
            continue;
        }
        if sides.iter().any(|i| !dimension[*i]) {
            // Facts to dimensions: only an equality of two columns.
            let Some((a, b)) = column_pair(p) else {
                return Ok(None);
            };
            let fact = if owner(a).is_some_and(|i| !dimension[i]) {
                a
            } else {
                b
            };
            if !keys.contains(fact) {
                keys.push(fact.clone());
            }
        }
        outer.push(p.clone());
    }
    for c in &groups {
        if owner(c).is_some_and(|i| !dimension[i]) && !keys.contains(c) {
            keys.push((*c).clone());
        }
    }
    // The facts, joined as connected inputs.
    let Some(facts_plan) = connect(facts.iter().map(|i| leaves[*i].clone()).collect(), &inner)?
    else {
        return Ok(None);
    };
    let partials: Vec<Expr> = functions
        .iter()
        .enumerate()
        .map(|(i, f)| Expr::AggregateFunction((*f).clone()).alias(format!("{PARTIAL}{i}")))
        .collect();
    let partial = LogicalPlan::Aggregate(Aggregate::try_new(
        Arc::new(facts_plan),
        keys.into_iter().map(Expr::Column).collect(),
        partials,
    )?);
    let mut inputs = vec![partial];
    inputs.extend(
        (0..leaves.len())
            .filter(|i| dimension[*i])
            .map(|i| leaves[i].clone()),
    );
    let Some(joined) = connect(inputs, &outer)? else {
        return Ok(None);
    };
    regrouped(aggregate, &functions, joined)
}

/// The facts' partial results joined to the dimensions (`joined`), aggregated again by the
/// query's groups and given the aggregation's columns, names and types (`None` when they
/// would differ).
fn regrouped(
    aggregate: &Aggregate,
    functions: &[&AggregateFunction],
    joined: LogicalPlan,
) -> Result<Option<LogicalPlan>> {
    let finals: Vec<Expr> = functions
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let partial = col(format!("{PARTIAL}{i}"));
            let combined = match f.func.name() {
                "sum" => sum(partial),
                "min" => min(partial),
                _ => max(partial),
            };
            combined.alias(format!("{FINAL}{i}"))
        })
        .collect();
    let grouped = LogicalPlan::Aggregate(Aggregate::try_new(
        Arc::new(joined),
        aggregate.group_expr.clone(),
        finals,
    )?);
    // The written columns, names and types.
    let written = aggregate.schema.as_ref();
    let n = aggregate.group_expr.len();
    let exprs: Vec<Expr> = written
        .iter()
        .enumerate()
        .map(|(i, (qualifier, field))| {
            if i < n {
                Expr::Column(Column::from((qualifier, field)))
            } else {
                cast(col(format!("{FINAL}{}", i - n)), field.data_type().clone())
                    .alias_qualified(qualifier.cloned(), field.name())
            }
        })
        .collect();
    let projected = LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(grouped))?);
    if !projected
        .schema()
        .logically_equivalent_names_and_types(written)
    {
        return Ok(None);
    }
    Ok(Some(projected))
}

/// `a = b` of two columns.
fn column_pair(e: &Expr) -> Option<(&Column, &Column)> {
    match e {
        Expr::BinaryExpr(b) if b.op == datafusion::logical_expr::Operator::Eq => {
            match (b.left.as_ref(), b.right.as_ref()) {
                (Expr::Column(l), Expr::Column(r)) => Some((l, r)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// `inputs` joined left-deep in their order, each next the first one a condition
/// connects to those joined so far; `None` if they are not all connected or a condition
/// is left over.
fn connect(mut inputs: Vec<LogicalPlan>, predicates: &[Expr]) -> Result<Option<LogicalPlan>> {
    if inputs.is_empty() {
        return Ok(None);
    }
    let mut applied = vec![false; predicates.len()];
    let mut equal = Classes::default();
    let mut plan = inputs.remove(0);
    while !inputs.is_empty() {
        let next = inputs.iter().position(|candidate| {
            predicates.iter().zip(&applied).any(|(p, done)| {
                let refs = p.column_refs();
                !done
                    && refs.iter().any(|c| candidate.schema().has_column(c))
                    && refs.iter().any(|c| plan.schema().has_column(c))
                    && refs
                        .iter()
                        .all(|c| candidate.schema().has_column(c) || plan.schema().has_column(c))
            })
        });
        let Some(next) = next else {
            return Ok(None);
        };
        let right = inputs.remove(next);
        plan = join(plan, right, predicates, &mut applied, &mut equal)?;
    }
    Ok(applied.iter().all(|done| *done).then_some(plan))
}

#[cfg(test)]
mod tests {
    // A test fails by panicking: each `expect` names the step that failed (building a
    // fixture, planning, running). None of this is compiled outside tests.
    use super::*;
    use crate::testing::{rows, session};
    use arrow::array::{Decimal128Array, Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    /// Sales of 12 customer ids (one sold to no one, one with a null id), customers with
    /// a repeated id, cities with a null.
    fn context() -> SessionContext {
        let ctx = session();
        let n = 400;
        let sales = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("customer", DataType::Int64, true),
                Field::new("day", DataType::Int64, false),
                Field::new("amount", DataType::Decimal128(12, 2), false),
            ])),
            vec![
                Arc::new(Int64Array::from(
                    (0..n)
                        .map(|i| (i % 13 != 12).then_some(i % 13))
                        .collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from((0..n).map(|i| i % 7).collect::<Vec<_>>())),
                Arc::new(
                    Decimal128Array::from(
                        (0..n)
                            .map(|i| i128::from(i * 37 % 1000 + 1))
                            .collect::<Vec<_>>(),
                    )
                    .with_precision_and_scale(12, 2)
                    .expect("decimal"),
                ),
            ],
        )
        .expect("sales");
        let ids: Vec<i64> = (0..11).chain([3]).collect();
        let customers = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("name", DataType::Utf8, false),
                Field::new("city", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(StringArray::from(
                    ids.iter()
                        .map(|i| format!("customer {i}"))
                        .collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(
                    ids.iter()
                        .map(|i| (i % 4 != 0).then(|| format!("city {}", i % 3)))
                        .collect::<Vec<_>>(),
                )),
            ],
        )
        .expect("customers");
        for (name, batch) in [("sales", sales), ("customers", customers)] {
            let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).expect("table");
            ctx.register_table(name, Arc::new(table)).expect("register");
        }
        ctx
    }

    async fn optimized(ctx: &SessionContext, sql: &str) -> LogicalPlan {
        let frame = ctx.sql(sql).await.expect("plan");
        frame.into_optimized_plan().expect("optimize")
    }

    /// The aggregations in `plan`.
    fn aggregations(plan: &LogicalPlan) -> usize {
        let mut found = 0;
        plan.apply(|n| {
            found += usize::from(matches!(n, LogicalPlan::Aggregate(_)));
            Ok(TreeNodeRecursion::Continue)
        })
        .expect("walk");
        found
    }

    /// Whether the optimized plan aggregates below a join.
    async fn aggregates_first(ctx: &SessionContext, sql: &str) -> bool {
        let mut found = false;
        optimized(ctx, sql)
            .await
            .apply(|node| {
                if let LogicalPlan::Join(_) = node {
                    found |= node.inputs().into_iter().any(|i| aggregations(i) > 0);
                }
                Ok(TreeNodeRecursion::Continue)
            })
            .expect("walk");
        found
    }

    /// The answers with the rule and without it, and whether it applied.
    async fn both(sql: &str) -> (Vec<String>, Vec<String>, bool) {
        let ctx = context();
        let applied = aggregates_first(&ctx, sql).await;
        let with = rows(&ctx, sql).await;
        rows(&ctx, "SET tarn.aggregate_before_joins = false").await;
        assert!(
            !aggregates_first(&ctx, sql).await,
            "the setting turns it off"
        );
        let without = rows(&ctx, sql).await;
        (with, without, applied)
    }

    #[tokio::test]
    async fn sums_by_a_dimension_are_taken_before_the_join_and_stay_exact() {
        // Customer 3 is listed twice: its sales count in both rows, with the rule or not.
        let sql = "SELECT c.city, c.name, sum(s.amount) AS total, min(s.amount) AS low, \
                   max(s.day) AS last FROM sales s JOIN customers c ON s.customer = c.id \
                   GROUP BY c.city, c.name ORDER BY c.city, c.name";
        let (with, without, applied) = both(sql).await;
        assert!(applied, "the sales are aggregated before the join");
        assert_eq!(with, without);
        assert!(with.iter().any(|l| l.contains("customer 3")), "{with:?}");
        // A grouping column of the facts is kept through the partial aggregation.
        let sql = "SELECT c.city, s.day, sum(s.amount) FROM sales s, customers c \
                   WHERE s.customer = c.id GROUP BY c.city, s.day ORDER BY 1, 2";
        let (with, without, applied) = both(sql).await;
        assert!(applied);
        assert_eq!(with, without);
        assert_eq!(
            with.len(),
            4 + 4 * 7,
            "three cities and no city, seven days"
        );
    }

    #[tokio::test]
    async fn the_partial_aggregation_is_not_split_again() {
        // `c` is joined to the sales and holds no grouping column: a fact, whose partial
        // aggregation (by `c.id`) would find `c` a dimension if split again.
        let sql = "SELECT d.name, sum(s.amount) FROM sales s \
                   JOIN customers c ON s.customer = c.id JOIN customers d ON c.id = d.id \
                   GROUP BY d.name ORDER BY 1";
        let plan = optimized(&context(), sql).await;
        assert_eq!(aggregations(&plan), 2, "{plan}");
        let (with, without, applied) = both(sql).await;
        assert!(applied);
        assert_eq!(with, without);
    }

    #[tokio::test]
    async fn filtered_dimensions_counts_and_distinct_are_left_alone() {
        for sql in [
            // The join already cuts the sales down.
            "SELECT c.name, sum(s.amount) FROM sales s JOIN customers c ON s.customer = c.id \
             WHERE c.city = 'city 1' GROUP BY c.name ORDER BY 1",
            // `count` is not split (its result column is declared never null, a sum's is not).
            "SELECT c.name, count(s.amount) FROM sales s JOIN customers c ON s.customer = c.id \
             GROUP BY c.name ORDER BY 1",
            "SELECT c.name, sum(DISTINCT s.amount) FROM sales s \
             JOIN customers c ON s.customer = c.id GROUP BY c.name ORDER BY 1",
            // Grouped by no column of the dimension.
            "SELECT s.day, sum(s.amount) FROM sales s JOIN customers c ON s.customer = c.id \
             GROUP BY s.day ORDER BY 1",
        ] {
            let (with, without, applied) = both(sql).await;
            assert!(!applied, "{sql}");
            assert_eq!(with, without);
        }
    }
}
