//! Aggregations keep only the functional dependencies that hold in their output.
//!
//! DataFusion records in each plan node's schema which columns determine which others
//! (an aggregation's groups are unique, so its grouping columns determine the rest), and
//! two of its optimizer rules use them: `eliminate_duplicated_expr` drops an `ORDER BY`
//! key that keys before it determine, and `optimize_projections` drops a `GROUP BY`
//! column that others determine.
//!
//! After a join, a dependency of one side still holds (`s.cust_id` determines the partial
//! sum an inner aggregation gave it) but no longer makes its source unique: another row of
//! the same `s.cust_id` joined a second `c.city`. DataFusion marks it so (mode `Multi`),
//! but an aggregation over the join grouped by `s.cust_id, c.city` then promotes it to a
//! key of its output whenever the dependency's targets and the whole group's targets
//! coincide, even where the groups include a column the source does not determine. The
//! output then claims `s.cust_id` determines `c.city`: `ORDER BY s.cust_id, c.city` lost
//! its second key, and a `GROUP BY` above could lose a column (Tarn's eager aggregation,
//! and hand-written queries of that shape, made such plans).
//!
//! This rule gives every aggregation the dependencies that do hold: one the input had
//! whose source is among the groups keeps determining the groups its targets name, and
//! makes its source a key of the output only where it determines every group (or was a
//! key of the input already); and the groups together are a key. It runs just before each
//! of DataFusion's rules that use dependencies, and leaves plans without a wrong one as
//! they are.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::common::{
    DFSchema, Dependency, FunctionalDependence, FunctionalDependencies, Result,
};
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The rule; see the module documentation.
#[derive(Debug)]
pub struct SoundDependencies {
    /// Rule names must be unique in EXPLAIN VERBOSE: the rule runs before `before`.
    name: String,
}

impl SoundDependencies {
    pub fn before(rule: &str) -> Self {
        Self {
            name: format!("tarn_sound_dependencies_before_{rule}"),
        }
    }
}

impl OptimizerRule for SoundDependencies {
    fn name(&self) -> &str {
        &self.name
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        if !has_unsound(&plan)? {
            return Ok(Transformed::no(plan));
        }
        // Bottom up: each node's schema is rebuilt from its inputs' (an aggregation's from
        // the dependencies that hold), so dependencies flow up as DataFusion derives them.
        plan.transform_up_with_subqueries(|node| {
            let node = match node {
                LogicalPlan::Aggregate(a) => LogicalPlan::Aggregate(sound(a)?),
                other => other.recompute_schema()?,
            };
            Ok(Transformed::yes(node))
        })
    }
}

/// Whether an aggregation in `plan` (or its subqueries) claims a dependency that does not
/// hold.
fn has_unsound(plan: &LogicalPlan) -> Result<bool> {
    let mut found = false;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::Aggregate(a) = node
            && let Some(holds) = holding(a)
            && a.schema.functional_dependencies() != &holds
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(found)
}

/// `aggregate` (rebuilt from its input, which may have changed) with the dependencies
/// that hold.
fn sound(aggregate: Aggregate) -> Result<Aggregate> {
    let mut rebuilt = Aggregate::try_new(
        Arc::clone(&aggregate.input),
        aggregate.group_expr,
        aggregate.aggr_expr,
    )?;
    if let Some(holds) = holding(&rebuilt) {
        let schema: DFSchema = rebuilt.schema.as_ref().clone();
        rebuilt.schema = Arc::new(schema.with_functional_dependencies(holds)?);
    }
    Ok(rebuilt)
}

/// The dependencies that hold in `aggregate`'s output (`None` for grouping sets, where
/// DataFusion keeps none).
fn holding(aggregate: &Aggregate) -> Option<FunctionalDependencies> {
    if aggregate
        .group_expr
        .iter()
        .any(|e| matches!(e, Expr::GroupingSet(_)))
    {
        return None;
    }
    let output = aggregate.schema.as_ref();
    let columns = output.fields().len();
    let groups: Vec<String> = aggregate
        .group_expr
        .iter()
        .map(|e| e.schema_name().to_string())
        .collect();
    let input = aggregate.input.schema();
    let input_names = input.field_names();
    // The group at each position of the output, by the input column it is (if it is one).
    let group_at = |name: &str| groups.iter().position(|g| g == name);
    let everything: Vec<usize> = (0..columns).collect();
    let mut holds = Vec::new();
    for dependence in input.functional_dependencies().iter() {
        let Some(source) = dependence
            .source_indices
            .iter()
            .map(|&i| group_at(&input_names[i]))
            .collect::<Option<Vec<usize>>>()
        else {
            continue;
        };
        // The groups the source determines: itself and the groups its targets name.
        let mut determined: HashSet<usize> = source.iter().copied().collect();
        determined.extend(
            dependence
                .target_indices
                .iter()
                .filter_map(|&i| group_at(&input_names[i])),
        );
        let key = dependence.mode == Dependency::Single || determined.len() == groups.len();
        let (targets, mode) = if key {
            (everything.clone(), Dependency::Single)
        } else {
            let mut targets: Vec<usize> = determined.into_iter().collect();
            targets.sort_unstable();
            (targets, Dependency::Multi)
        };
        holds.push(FunctionalDependence::new(source, targets, dependence.nullable).with_mode(mode));
    }
    if !groups.is_empty() {
        let all: Vec<usize> = (0..groups.len()).collect();
        if !holds.iter().any(|d| {
            d.mode == Dependency::Single && d.source_indices.iter().all(|&i| i < groups.len())
        }) {
            let nullable = all.iter().any(|&i| output.field(i).is_nullable());
            holds.push(
                FunctionalDependence::new(all, everything, nullable).with_mode(Dependency::Single),
            );
        }
    }
    Some(FunctionalDependencies::new(holds))
}

#[cfg(test)]
mod tests {
    // A test fails by panicking; none of this is compiled outside tests.
    use crate::testing::{session, sorted_values, values};
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;
    use std::sync::Arc;

    /// Sales by customer, and customers whose keys repeat (two cities each).
    fn context() -> SessionContext {
        let ctx = session();
        let sales = Arc::new(Schema::new(vec![
            Field::new("cust_id", DataType::Int64, true),
            Field::new("qty", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&sales),
            vec![
                Arc::new(Int64Array::from(vec![101, 101, 202, 202, 303])),
                Arc::new(Int64Array::from(vec![20, 3, 30, 1, 16])),
            ],
        )
        .expect("sales");
        ctx.register_table(
            "sales",
            Arc::new(MemTable::try_new(sales, vec![vec![batch]]).expect("table")),
        )
        .expect("register");
        let customers = Arc::new(Schema::new(vec![
            Field::new("cust_id", DataType::Int64, true),
            Field::new("city", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&customers),
            vec![
                Arc::new(Int64Array::from(vec![101, 101, 202, 202, 303])),
                Arc::new(StringArray::from(vec![
                    "NEW YORK", "Bergen", "東京", "a%b", "Oslo",
                ])),
            ],
        )
        .expect("customers");
        ctx.register_table(
            "customers",
            Arc::new(MemTable::try_new(customers, vec![vec![batch]]).expect("table")),
        )
        .expect("register");
        ctx
    }

    #[tokio::test]
    async fn order_by_keeps_keys_a_join_with_repeated_keys_leaves_undetermined() {
        let expected = vec![
            "101|Bergen|23",
            "101|NEW YORK|23",
            "202|a%b|31",
            "202|東京|31",
            "303|Oslo|16",
        ];
        // Tarn's eager aggregation sums sales by customer first.
        let ctx = context();
        let sql = "SELECT s.cust_id, c.city, sum(s.qty) AS t FROM sales s \
                   JOIN customers c ON s.cust_id = c.cust_id \
                   GROUP BY s.cust_id, c.city ORDER BY s.cust_id, c.city";
        assert_eq!(values(&ctx, sql).await, expected);
        // The same shape written by hand, in plain DataFusion's planning.
        let sql = "SELECT s.cust_id, c.city, sum(s.t) AS t FROM \
                   (SELECT cust_id, sum(qty) AS t FROM sales GROUP BY cust_id) s \
                   JOIN customers c ON s.cust_id = c.cust_id \
                   GROUP BY s.cust_id, c.city ORDER BY s.cust_id, c.city";
        assert_eq!(values(&ctx, sql).await, expected);
    }

    #[tokio::test]
    async fn group_by_keeps_columns_a_join_with_repeated_keys_leaves_undetermined() {
        let ctx = context();
        // One row per customer and city, counted per customer: two cities, two rows.
        let sql = "SELECT cust_id, count(*) FROM \
                   (SELECT s.cust_id, c.city, sum(s.t) AS t FROM \
                     (SELECT cust_id, sum(qty) AS t FROM sales GROUP BY cust_id) s \
                     JOIN customers c ON s.cust_id = c.cust_id GROUP BY s.cust_id, c.city) \
                   GROUP BY cust_id, city";
        assert_eq!(
            sorted_values(&ctx, sql).await,
            vec!["101|1", "101|1", "202|1", "202|1", "303|1"]
        );
    }
}
