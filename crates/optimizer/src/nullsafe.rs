//! Join keys of a null-safe join stay exact when `=` conditions join them.
//!
//! DataFusion turns `a.k IS NOT DISTINCT FROM b.k` into a hash-join key whose join matches
//! nulls with nulls (`NullEquality::NullEqualsNull`, one setting for all of a join's keys).
//! Its `extract_equijoin_predicate` rule then also moves any `x = y` of the join's
//! condition into the keys, including one that a `WHERE` pushed into the join later, and
//! keeps the setting, so `NULL = NULL` joins rows (`ON s.p IS NOT DISTINCT FROM p.p WHERE
//! s.price = p.cost` kept rows where both prices are null).
//!
//! This rule wraps DataFusion's: where it adds `=` keys to a join that matches nulls, each
//! such key's left side must also be non-null (`l IS NOT NULL` joins the condition). Matched
//! null-safely and non-null, `l` and `r` are then equal exactly where `l = r` is true.

use std::sync::Arc;

use datafusion::common::NullEquality;
use datafusion::common::Result;
use datafusion::common::tree_node::Transformed;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Join, LogicalPlan};
use datafusion::optimizer::extract_equijoin_predicate::ExtractEquijoinPredicate;
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// DataFusion's `extract_equijoin_predicate`, exact for joins that match nulls.
#[derive(Debug, Default)]
pub struct ExtractEquijoinKeys {
    inner: ExtractEquijoinPredicate,
}

impl OptimizerRule for ExtractEquijoinKeys {
    fn name(&self) -> &str {
        // The name DataFusion's rule has, so the rule lists and EXPLAIN VERBOSE read the same.
        self.inner.name()
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        self.inner.apply_order()
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let keys_before = match &plan {
            LogicalPlan::Join(join)
                if join.null_equality == NullEquality::NullEqualsNull && join.filter.is_some() =>
            {
                Some(join.on.len())
            }
            _ => None,
        };
        let result = self.inner.rewrite(plan, config)?;
        let Some(before) = keys_before else {
            return Ok(result);
        };
        result.map_data(|plan| match plan {
            LogicalPlan::Join(join) if join.on.len() > before => Ok(non_null_keys(join, before)),
            other => Ok(other),
        })
    }
}

/// `join` with the keys from `from` on required to be non-null on the left.
fn non_null_keys(join: Join, from: usize) -> LogicalPlan {
    let mut conditions: Vec<_> = join.filter.into_iter().collect();
    conditions.extend(join.on[from..].iter().map(|(l, _)| l.clone().is_not_null()));
    LogicalPlan::Join(Join {
        filter: conjunction(conditions),
        left: Arc::clone(&join.left),
        right: Arc::clone(&join.right),
        on: join.on,
        join_type: join.join_type,
        join_constraint: join.join_constraint,
        schema: join.schema,
        null_equality: join.null_equality,
        null_aware: join.null_aware,
    })
}

#[cfg(test)]
mod tests {
    // A test fails by panicking; none of this is compiled outside tests.
    use crate::testing::{optimized, session, sorted_values};
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use std::sync::Arc;

    fn table(columns: &[(&str, Vec<Option<i64>>)]) -> Arc<MemTable> {
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
        Arc::new(MemTable::try_new(schema, vec![vec![batch]]).expect("table"))
    }

    #[tokio::test]
    async fn an_equality_beside_a_null_safe_key_does_not_match_nulls() {
        let ctx = session();
        // Keys match null-safely (NULL with NULL); the prices are NULL on both sides in the
        // rows whose keys match, and equal in one.
        ctx.register_table(
            "s",
            table(&[
                ("k", vec![Some(1), None, Some(2), Some(3)]),
                ("price", vec![Some(10), None, None, Some(30)]),
            ]),
        )
        .expect("s");
        ctx.register_table(
            "p",
            table(&[
                ("k", vec![Some(1), None, Some(2), Some(3)]),
                ("cost", vec![Some(10), None, None, Some(31)]),
            ]),
        )
        .expect("p");
        // The WHERE equality reaches the join after its null-safe key was taken: it joins
        // the keys, and must not match NULL with NULL.
        let pushed = "SELECT s.k, s.price FROM s JOIN p ON s.k IS NOT DISTINCT FROM p.k \
                      WHERE s.price = p.cost";
        assert_eq!(sorted_values(&ctx, pushed).await, vec!["1|10"]);
        let plan = optimized(&ctx, pushed).await.display_indent().to_string();
        assert!(plan.contains("s.price IS NOT NULL"), "{plan}");
        // Written in the ON clause, the equality is the key and the null-safe test a filter.
        let written = "SELECT s.k, s.price FROM s JOIN p ON (s.k IS NOT DISTINCT FROM p.k) \
                       AND s.price = p.cost";
        assert_eq!(sorted_values(&ctx, written).await, vec!["1|10"]);
        // Null-safe keys alone still match NULL with NULL.
        let sql = "SELECT s.k FROM s JOIN p ON s.k IS NOT DISTINCT FROM p.k";
        assert_eq!(sorted_values(&ctx, sql).await, vec!["1", "2", "3", "NULL"]);
    }
}
