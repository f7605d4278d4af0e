//! Filters' row estimates from the catalog's distinct counts, before DataFusion picks
//! each hash join's build side.
//!
//! DataFusion estimates the rows a filter keeps by interval analysis over the input's
//! column ranges, which covers comparisons of numbers and dates. A filter with any other
//! condition (an equality on a string, `IN` a list of strings, `LIKE`) keeps a fixed
//! share of its input, a fifth, whatever the condition. The catalog counts each string
//! column's distinct values, and those counts reach the scans' statistics, but the filter
//! does not read them. So in TPC-H Q8 the 150 part types' one type looked like 400,000
//! parts rather than 13,000; the lineitem side joined to them looked 30 times its size, and
//! DataFusion built the hash table of the next join on 4.5M orders instead of on those
//! 400,000 lines.
//!
//! This rule runs before DataFusion's `join_selection`. For each filter that interval
//! analysis cannot estimate, it estimates the share of rows the filter keeps and sets it
//! as the filter's default selectivity (the share DataFusion uses exactly in that case):
//! - `column = constant` keeps one row in the column's distinct count; `<>` the rest;
//!   `IN (…)` one share per listed value;
//! - a condition interval analysis can estimate keeps what it estimates; a comparison of a
//!   decimal with a constant keeps its share of the column's range;
//! - `AND` multiplies, except that the conditions interval analysis covers are analysed
//!   together and the comparisons of one decimal column keep the part of its range
//!   between them; `OR` adds (at most all rows), `NOT` takes the rest;
//! - `IS NULL` keeps the column's nulls;
//! - anything else (`LIKE`, a function) keeps the default share (`NOT LIKE` the rest).
//!
//! A filter none of whose conditions is estimated from statistics keeps DataFusion's
//! default. The share is a whole percent (DataFusion's setting), at least 1%.
//! `--datafusion-config tarn.estimate_filters=false` turns the rule off.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, Statistics};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{
    BinaryExpr, CastExpr, Column, InListExpr, IsNotNullExpr, IsNullExpr, LikeExpr, Literal, NotExpr,
};
use datafusion::physical_expr::intervals::utils::check_support;
use datafusion::physical_expr::{
    AnalysisContext, PhysicalExpr, analyze, conjunction, split_conjunction,
};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::{ExecutionPlan, StatisticsArgs, StatisticsContext};

use super::TarnOptions;
use super::joinorder::number;

/// The rule; see the module documentation.
#[derive(Debug, Default)]
pub struct EstimateFilters;

impl PhysicalOptimizerRule for EstimateFilters {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !TarnOptions::get(config, |o| o.estimate_filters) {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            let Some(filter) = node.downcast_ref::<FilterExec>() else {
                return Ok(Transformed::no(node));
            };
            let schema = filter.input().schema();
            if check_support(filter.predicate(), &schema) {
                // DataFusion's own estimate applies.
                return Ok(Transformed::no(node));
            }
            // Statistics that cannot be computed leave the filter as it is.
            let Ok(stats) =
                StatisticsContext::new().compute(filter.input().as_ref(), &StatisticsArgs::new())
            else {
                return Ok(Transformed::no(node));
            };
            let mut estimate = Estimate {
                schema: &schema,
                stats: &stats,
                default: f64::from(filter.default_selectivity()) / 100.0,
                informed: false,
            };
            let share = estimate.share(filter.predicate());
            if !estimate.informed || !share.is_finite() {
                return Ok(Transformed::no(node));
            }
            let percent = (share * 100.0).round().clamp(1.0, 100.0) as u8;
            if percent == filter.default_selectivity() {
                return Ok(Transformed::no(node));
            }
            let rebuilt = FilterExecBuilder::from(filter)
                .with_default_selectivity(percent)
                .build()?;
            Ok(Transformed::yes(Arc::new(rebuilt) as _))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "tarn_estimate_filters"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// What a filter's input is known to hold, and whether any estimate used it.
struct Estimate<'a> {
    schema: &'a arrow::datatypes::SchemaRef,
    stats: &'a Statistics,
    /// The share kept by a condition nothing is known of.
    default: f64,
    /// Whether some condition was estimated from the statistics.
    informed: bool,
}

impl Estimate<'_> {
    /// The share of rows `expr` keeps.
    fn share(&mut self, expr: &Arc<dyn PhysicalExpr>) -> f64 {
        let conditions = split_conjunction(expr);
        if conditions.len() > 1 {
            return self.all(&conditions);
        }
        if check_support(expr, self.schema)
            && let Some(share) = self.analyzed(expr)
        {
            self.informed = true;
            return share;
        }
        if let Some(binary) = expr.downcast_ref::<BinaryExpr>() {
            let (left, right) = (binary.left(), binary.right());
            return match binary.op() {
                Operator::Or => (self.share(left) + self.share(right)).min(1.0),
                Operator::Eq => self.equal_share(left, right).unwrap_or(self.default),
                Operator::NotEq => self
                    .equal_share(left, right)
                    .map_or(1.0 - self.default, |s| 1.0 - s),
                _ => self
                    .range(expr)
                    .map_or(self.default, |(_, low, high)| high - low),
            };
        }
        if let Some(list) = expr.downcast_ref::<InListExpr>() {
            let share = match self.distinct(list.expr()) {
                Some(distinct) => {
                    self.informed = true;
                    (list.len() as f64 / distinct).min(1.0)
                }
                None => self.default,
            };
            return if list.negated() { 1.0 - share } else { share };
        }
        if let Some(not) = expr.downcast_ref::<NotExpr>() {
            return 1.0 - self.share(not.arg());
        }
        if let Some(like) = expr.downcast_ref::<LikeExpr>() {
            return if like.negated() {
                1.0 - self.default
            } else {
                self.default
            };
        }
        if let Some(is_null) = expr.downcast_ref::<IsNullExpr>() {
            return self.null_share(is_null.arg()).unwrap_or(self.default);
        }
        if let Some(is_not_null) = expr.downcast_ref::<IsNotNullExpr>() {
            return self
                .null_share(is_not_null.arg())
                .map_or(1.0 - self.default, |s| 1.0 - s);
        }
        self.default
    }

    /// The share of rows all of `conditions` keep: those interval analysis covers
    /// analysed together, the ranges of each decimal column intersected, the rest
    /// multiplied.
    fn all(&mut self, conditions: &[&Arc<dyn PhysicalExpr>]) -> f64 {
        let (analysable, rest): (Vec<_>, Vec<_>) = conditions
            .iter()
            .copied()
            .partition(|c| check_support(c, self.schema));
        let mut share = 1.0;
        if !analysable.is_empty() {
            let together = conjunction(analysable.iter().map(|c| Arc::clone(c)));
            match self.analyzed(&together) {
                Some(s) => {
                    self.informed = true;
                    share *= s;
                }
                None => share *= self.default.powi(analysable.len() as i32),
            }
        }
        let mut ranges: HashMap<usize, (f64, f64)> = HashMap::new();
        for condition in rest {
            match self.range(condition) {
                Some((column, low, high)) => {
                    let range = ranges.entry(column).or_insert((0.0, 1.0));
                    *range = (range.0.max(low), range.1.min(high));
                }
                None => share *= self.share(condition),
            }
        }
        for (low, high) in ranges.into_values() {
            share *= (high - low).max(0.0);
        }
        share
    }

    /// DataFusion's interval analysis of `expr` over the input's column ranges.
    fn analyzed(&self, expr: &Arc<dyn PhysicalExpr>) -> Option<f64> {
        let context =
            AnalysisContext::try_from_statistics(self.schema, &self.stats.column_statistics)
                .ok()?;
        analyze(expr, context, self.schema).ok()?.selectivity
    }

    /// The share of rows where a column equals a constant: one in its distinct count.
    fn equal_share(
        &mut self,
        left: &Arc<dyn PhysicalExpr>,
        right: &Arc<dyn PhysicalExpr>,
    ) -> Option<f64> {
        let distinct = match (left.is::<Literal>(), right.is::<Literal>()) {
            (false, true) => self.distinct(left)?,
            (true, false) => self.distinct(right)?,
            _ => return None,
        };
        self.informed = true;
        Some(1.0 / distinct)
    }

    /// For a comparison of a column (a decimal, which interval analysis does not cover)
    /// with a constant: the column, and the part of its range it keeps, from and to as
    /// shares of the range.
    fn range(&mut self, expr: &Arc<dyn PhysicalExpr>) -> Option<(usize, f64, f64)> {
        let binary = expr.downcast_ref::<BinaryExpr>()?;
        let (left, right) = (binary.left(), binary.right());
        let (column, literal, op) = match (column(left), right.downcast_ref::<Literal>()) {
            (Some(c), Some(l)) => (c, l, *binary.op()),
            _ => (
                column(right)?,
                left.downcast_ref::<Literal>()?,
                binary.op().swap()?,
            ),
        };
        let stats = self.stats.column_statistics.get(column.index())?;
        let min = number(stats.min_value.get_value()?)?;
        let max = number(stats.max_value.get_value()?)?;
        let value = number(literal.value())?;
        if max <= min {
            return None;
        }
        let at = ((value - min) / (max - min)).clamp(0.0, 1.0);
        let kept = match op {
            Operator::Lt | Operator::LtEq => (0.0, at),
            Operator::Gt | Operator::GtEq => (at, 1.0),
            _ => return None,
        };
        self.informed = true;
        Some((column.index(), kept.0, kept.1))
    }

    /// The distinct count of a column (through casts), when known.
    fn distinct(&self, expr: &Arc<dyn PhysicalExpr>) -> Option<f64> {
        let column = column(expr)?;
        let stats = self.stats.column_statistics.get(column.index())?;
        match stats.distinct_count {
            Precision::Exact(n) | Precision::Inexact(n) if n > 0 => Some(n as f64),
            _ => None,
        }
    }

    /// The share of rows where a column is null, when its null count is known.
    fn null_share(&mut self, expr: &Arc<dyn PhysicalExpr>) -> Option<f64> {
        let column = column(expr)?;
        let nulls = *self
            .stats
            .column_statistics
            .get(column.index())?
            .null_count
            .get_value()?;
        let rows = *self.stats.num_rows.get_value()?;
        if rows == 0 {
            return None;
        }
        self.informed = true;
        Some((nulls as f64 / rows as f64).min(1.0))
    }
}

/// The column `expr` is, through casts.
fn column(expr: &Arc<dyn PhysicalExpr>) -> Option<&Column> {
    if let Some(cast) = expr.downcast_ref::<CastExpr>() {
        return column(cast.expr());
    }
    expr.downcast_ref::<Column>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::{ColumnStatistics, JoinType, NullEquality, ScalarValue};
    use datafusion::datasource::listing::PartitionedFile;
    use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
    use datafusion::datasource::source::DataSourceExec;
    use datafusion::execution::object_store::ObjectStoreUrl;
    use datafusion::physical_expr::expressions::{col, in_list, like, lit};
    use datafusion::physical_optimizer::join_selection::JoinSelection;
    use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};

    /// A scan of `rows` rows of `(id, status, price)` whose statistics hold what a crawl
    /// records: the ids' range, the statuses' distinct count, the prices' range.
    fn scan(rows: usize, statuses: usize) -> Arc<dyn ExecutionPlan> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("status", DataType::Utf8View, false),
            Field::new("price", DataType::Decimal128(15, 2), false),
        ]));
        let statistics = Statistics {
            num_rows: Precision::Inexact(rows),
            total_byte_size: Precision::Inexact(rows * 40),
            column_statistics: vec![
                ColumnStatistics {
                    min_value: Precision::Inexact(ScalarValue::Int64(Some(1))),
                    max_value: Precision::Inexact(ScalarValue::Int64(Some(rows as i64))),
                    null_count: Precision::Inexact(0),
                    ..ColumnStatistics::new_unknown()
                },
                ColumnStatistics {
                    distinct_count: Precision::Inexact(statuses),
                    null_count: Precision::Inexact(0),
                    ..ColumnStatistics::new_unknown()
                },
                ColumnStatistics {
                    min_value: Precision::Inexact(ScalarValue::Decimal128(Some(0), 15, 2)),
                    max_value: Precision::Inexact(ScalarValue::Decimal128(Some(10_000), 15, 2)),
                    null_count: Precision::Inexact(0),
                    ..ColumnStatistics::new_unknown()
                },
            ],
        };
        let source = ParquetSource::new(Arc::clone(&schema));
        let config =
            FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source))
                .with_file_groups(vec![FileGroup::new(vec![PartitionedFile::new(
                    "t.parquet",
                    1000,
                )])])
                .with_statistics(statistics)
                .build();
        DataSourceExec::from_data_source(config)
    }

    fn filter(
        input: Arc<dyn ExecutionPlan>,
        predicate: impl FnOnce(&arrow::datatypes::Schema) -> Arc<dyn PhysicalExpr>,
    ) -> Arc<dyn ExecutionPlan> {
        let predicate = predicate(&input.schema());
        Arc::new(FilterExec::try_new(predicate, input).expect("filter"))
    }

    fn optimized(plan: Arc<dyn ExecutionPlan>, on: bool) -> Arc<dyn ExecutionPlan> {
        let mut config = ConfigOptions::new();
        config.extensions.insert(TarnOptions {
            estimate_filters: on,
            ..TarnOptions::default()
        });
        EstimateFilters.optimize(plan, &config).expect("optimize")
    }

    /// The percent of rows the (optimized) filter keeps, and its row estimate.
    fn estimated(plan: Arc<dyn ExecutionPlan>) -> (u8, usize) {
        let plan = optimized(plan, true);
        let filter = plan.downcast_ref::<FilterExec>().expect("a filter");
        let rows = StatisticsContext::new()
            .compute(plan.as_ref(), &StatisticsArgs::new())
            .expect("statistics")
            .num_rows;
        (
            filter.default_selectivity(),
            *rows.get_value().expect("rows"),
        )
    }

    fn status(schema: &Schema) -> Arc<dyn PhysicalExpr> {
        col("status", schema).expect("column")
    }

    fn text(v: &str) -> Arc<dyn PhysicalExpr> {
        lit(ScalarValue::Utf8View(Some(v.to_string())))
    }

    fn eq(schema: &Schema, v: &str) -> Arc<dyn PhysicalExpr> {
        Arc::new(BinaryExpr::new(status(schema), Operator::Eq, text(v)))
    }

    #[test]
    fn a_string_equality_keeps_one_row_in_its_distinct_count() {
        // 50 statuses: 2% of 100,000 rows, where DataFusion alone keeps a fifth.
        assert_eq!(
            estimated(filter(scan(100_000, 50), |s| eq(s, "F"))),
            (2, 2_000)
        );
        let plan = optimized(filter(scan(100_000, 50), |s| eq(s, "F")), false);
        let unchanged = plan.downcast_ref::<FilterExec>().expect("a filter");
        assert_eq!(unchanged.default_selectivity(), 20);
        // Not equal: the rest.
        let not_equal = |s: &Schema| -> Arc<dyn PhysicalExpr> {
            Arc::new(BinaryExpr::new(status(s), Operator::NotEq, text("F")))
        };
        assert_eq!(estimated(filter(scan(100_000, 50), not_equal)).0, 98);
        // A list: one share per value; negated, the rest.
        let listed = |negated: bool| {
            move |s: &Schema| -> Arc<dyn PhysicalExpr> {
                in_list(
                    status(s),
                    vec![text("A"), text("B"), text("C")],
                    &negated,
                    s,
                )
                .expect("in list")
            }
        };
        assert_eq!(estimated(filter(scan(100_000, 50), listed(false))).0, 6);
        assert_eq!(estimated(filter(scan(100_000, 50), listed(true))).0, 94);
        // A single value among very many keeps the least DataFusion can say: 1%.
        assert_eq!(estimated(filter(scan(100_000, 5_000), |s| eq(s, "F"))).0, 1);
    }

    #[test]
    fn conditions_combine_and_the_unknown_keep_the_default() {
        // `LIKE` alone: nothing is known, DataFusion's fifth stays.
        let liked = |s: &Schema| -> Arc<dyn PhysicalExpr> {
            like(false, false, status(s), text("A%"), s).expect("like")
        };
        assert_eq!(estimated(filter(scan(100_000, 50), liked)).0, 20);
        // A decimal below a quarter of its range, and a status: 25% of 10%.
        let both = |s: &Schema| -> Arc<dyn PhysicalExpr> {
            let price = col("price", s).expect("column");
            let cheap = Arc::new(BinaryExpr::new(
                price,
                Operator::Lt,
                lit(ScalarValue::Decimal128(Some(2_500), 15, 2)),
            ));
            Arc::new(BinaryExpr::new(cheap, Operator::And, eq(s, "F")))
        };
        let (percent, rows) = estimated(filter(scan(100_000, 10), both));
        assert_eq!(percent, 3, "a quarter of a tenth, rounded");
        assert_eq!(rows, 3_000);
        // Two bounds of one decimal: the part of its range between them, not the product.
        let between = |s: &Schema| -> Arc<dyn PhysicalExpr> {
            let bound = |op, cents| -> Arc<dyn PhysicalExpr> {
                Arc::new(BinaryExpr::new(
                    col("price", s).expect("column"),
                    op,
                    lit(ScalarValue::Decimal128(Some(cents), 15, 2)),
                ))
            };
            Arc::new(BinaryExpr::new(
                bound(Operator::GtEq, 2_500),
                Operator::And,
                bound(Operator::LtEq, 4_500),
            ))
        };
        assert_eq!(estimated(filter(scan(100_000, 10), between)).0, 20);
        // Either of two statuses: the shares add up.
        let either = |s: &Schema| -> Arc<dyn PhysicalExpr> {
            Arc::new(BinaryExpr::new(eq(s, "F"), Operator::Or, eq(s, "O")))
        };
        assert_eq!(estimated(filter(scan(100_000, 25), either)).0, 8);
        let neither = |s: &Schema| -> Arc<dyn PhysicalExpr> {
            Arc::new(NotExpr::new(Arc::new(BinaryExpr::new(
                eq(s, "F"),
                Operator::Or,
                eq(s, "O"),
            ))))
        };
        assert_eq!(estimated(filter(scan(100_000, 25), neither)).0, 92);
    }

    #[test]
    fn the_hash_table_is_built_on_the_side_the_counts_show_smaller() {
        // 1,000,000 rows of 50 statuses, one status kept: 20,000 rows, against 50,000 on
        // the other side. With a fifth kept, the filtered side looks like 200,000 rows.
        let build_side = |on: bool| -> usize {
            let filtered = filter(scan(1_000_000, 50), |s| eq(s, "F"));
            let other = scan(50_000, 5);
            let key = |p: &Arc<dyn ExecutionPlan>| col("id", &p.schema()).expect("column");
            let join = HashJoinExec::try_new(
                Arc::clone(&other),
                Arc::clone(&filtered),
                vec![(key(&other), key(&filtered))],
                None,
                &JoinType::Inner,
                None,
                PartitionMode::Auto,
                NullEquality::NullEqualsNothing,
                false,
            )
            .expect("join");
            let config = ConfigOptions::new();
            let plan = optimized(Arc::new(join), on);
            let plan = JoinSelection::new()
                .optimize(plan, &config)
                .expect("join selection");
            let mut found = None;
            plan.apply(|node| {
                if let Some(join) = node.downcast_ref::<HashJoinExec>() {
                    let rows = StatisticsContext::new()
                        .compute(join.left().as_ref(), &StatisticsArgs::new())?
                        .num_rows;
                    found = rows.get_value().copied();
                }
                Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
            })
            .expect("walk");
            found.expect("a hash join")
        };
        assert_eq!(build_side(true), 20_000);
        assert_eq!(build_side(false), 50_000);
    }
}
