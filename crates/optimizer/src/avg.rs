//! Decimal averages computed from the sums and counts the query already takes.
//!
//! `SELECT sum(qty), avg(qty), sum(price), avg(price), avg(discount), count(*) … GROUP BY
//! …` (TPC-H Q1, and most dashboards' summaries) runs one accumulator per aggregate, and
//! an average keeps a sum and a count of its own: Q1 adds up `qty` and `price` twice per
//! row and counts its rows four times. For a decimal column the average is exactly its
//! integer sum over its count, so the rule makes each `avg(x)` a division of a `sum(x)`
//! and a count of `x`'s values, shared with the query's own where they exist:
//! - the sum is a plain `sum(x)` of the same expression;
//! - the count is a plain `count(x)` of the same expression or, where `x` is never null, any
//!   plain count of a never-null expression (`count(*)`).
//!
//! The rule applies only where it leaves fewer accumulators than before (an average counts
//! as two), and only to `Decimal128` inputs of at most 25 digits, which DataFusion's own
//! average also sums in 128 bits: the sums are the same integers, and the division is
//! DataFusion's (scaled to the result's scale, truncated, checked against its precision),
//! so results and errors are exactly the same. Floating-point averages are left alone,
//! since summing in another order can change their last digit.
//! `--datafusion-config tarn.avg_from_sums=false` turns the rule off.

use std::sync::Arc;

use arrow::array::{Array, AsArray, Decimal128Array, Int64Array};
use arrow::datatypes::{DataType, Decimal128Type, DecimalType, Field, FieldRef};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result, ScalarValue, exec_err, internal_err};
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::logical_expr::expr::{AggregateFunction, ScalarFunction};
use datafusion::logical_expr::{
    Aggregate, AggregateUDF, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Projection,
    ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use super::TarnOptions;

/// The rule; see the module documentation.
#[derive(Debug, Default)]
pub struct AvgFromSums;

impl OptimizerRule for AvgFromSums {
    fn name(&self) -> &str {
        "tarn_avg_from_sums"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        if !TarnOptions::get(&config.options(), |o| o.avg_from_sums) {
            return Ok(Transformed::no(plan));
        }
        super::replaced(plan, |plan| match plan {
            LogicalPlan::Aggregate(aggregate) => from_sums(aggregate),
            _ => Ok(None),
        })
    }
}

/// The argument of `e` when it is a plain aggregate `name` (no `DISTINCT`, `FILTER` or
/// `ORDER BY`) of one argument, under aliases or not.
fn plain<'a>(e: &'a Expr, name: &str) -> Option<&'a Expr> {
    let f = match e {
        Expr::AggregateFunction(f) => f,
        Expr::Alias(a) => return plain(&a.expr, name),
        _ => return None,
    };
    let p = &f.params;
    let plain = !p.distinct && p.filter.is_none() && p.order_by.is_empty() && p.args.len() == 1;
    (plain && f.func.name() == name).then(|| &p.args[0])
}

/// The index of the first of `exprs` that `found` picks, or of `function(x)` added at the
/// end under a name of its own.
fn find_or_add(
    exprs: &mut Vec<Expr>,
    found: impl Fn(&Expr) -> bool,
    function: Arc<AggregateUDF>,
    x: &Expr,
) -> usize {
    if let Some(at) = exprs.iter().position(found) {
        return at;
    }
    let name = format!("__tarn_avg_{}_{}", function.name(), exprs.len());
    let call = AggregateFunction::new_udf(function, vec![x.clone()], false, None, vec![], None);
    exprs.push(Expr::AggregateFunction(call).alias(name));
    exprs.len() - 1
}

/// Where an original aggregate's value comes from in the rewritten aggregation.
enum Source {
    /// The aggregate at this index, unchanged.
    Kept(usize),
    /// The sum and the count at these indexes, divided.
    Average { sum: usize, count: usize },
}

/// The aggregation with its averages taken from sums and counts, under a projection that
/// gives the original columns; `None` where that would not save an accumulator.
fn from_sums(aggregate: &Aggregate) -> Result<Option<LogicalPlan>> {
    let input = aggregate.input.schema();
    let decimal_average = |e: &Expr| {
        let x = plain(e, "avg")?;
        match x.get_type(input).ok()? {
            DataType::Decimal128(precision, _) if precision <= 25 => Some(x.clone()),
            _ => None,
        }
    };
    if !aggregate
        .aggr_expr
        .iter()
        .any(|e| decimal_average(e).is_some())
    {
        return Ok(None);
    }
    let never_null = |e: &Expr| matches!(e.nullable(input), Ok(false));
    let mut exprs: Vec<Expr> = Vec::new();
    let mut sources: Vec<Option<Source>> = Vec::new();
    for e in &aggregate.aggr_expr {
        if decimal_average(e).is_some() {
            sources.push(None);
        } else {
            sources.push(Some(Source::Kept(exprs.len())));
            exprs.push(e.clone());
        }
    }
    for (e, source) in aggregate.aggr_expr.iter().zip(sources.iter_mut()) {
        let Some(x) = decimal_average(e) else {
            continue;
        };
        let sum = find_or_add(&mut exprs, |e| plain(e, "sum") == Some(&x), sum_udaf(), &x);
        let counts_x = |e: &Expr| {
            plain(e, "count").is_some_and(|y| *y == x || (never_null(&x) && never_null(y)))
        };
        let count = find_or_add(&mut exprs, counts_x, count_udaf(), &x);
        *source = Some(Source::Average { sum, count });
    }
    // An average keeps two accumulators.
    let accumulators = |exprs: &[Expr]| -> usize {
        exprs
            .iter()
            .map(|e| if plain(e, "avg").is_some() { 2 } else { 1 })
            .sum()
    };
    if accumulators(&exprs) >= accumulators(&aggregate.aggr_expr) {
        return Ok(None);
    }
    let Ok(rewritten) = Aggregate::try_new(
        Arc::clone(&aggregate.input),
        aggregate.group_expr.clone(),
        exprs,
    ) else {
        return Ok(None);
    };
    let original = aggregate.schema.as_ref();
    let groups = original.fields().len() - aggregate.aggr_expr.len();
    let column = |i: usize| Expr::Column(Column::from(rewritten.schema.qualified_field(i)));
    let mut columns = Vec::with_capacity(original.fields().len());
    for i in 0..original.fields().len() {
        let (qualifier, field) = original.qualified_field(i);
        let value = match i.checked_sub(groups).map(|j| &sources[j]) {
            None => column(i),
            Some(Some(Source::Kept(at))) => column(groups + at),
            Some(Some(Source::Average { sum, count })) => {
                let udf = ScalarUDF::new_from_impl(DecimalAverage::new(field.data_type().clone()));
                Expr::ScalarFunction(ScalarFunction::new_udf(
                    Arc::new(udf),
                    vec![column(groups + sum), column(groups + count)],
                ))
            }
            Some(None) => return internal_err!("an average without a source"),
        };
        columns.push(value.alias_qualified(qualifier.cloned(), field.name()));
    }
    let Ok(projection) = Projection::try_new(columns, Arc::new(LogicalPlan::Aggregate(rewritten)))
    else {
        return Ok(None);
    };
    // Only where every column keeps its name and type.
    let same = projection.schema.fields().len() == original.fields().len()
        && projection
            .schema
            .iter()
            .zip(original.iter())
            .all(|((q1, f1), (q2, f2))| {
                q1 == q2 && f1.name() == f2.name() && f1.data_type() == f2.data_type()
            });
    Ok(same.then_some(LogicalPlan::Projection(projection)))
}

/// `sum / count` as DataFusion's decimal average of result type `result` computes it (see
/// [`DecimalAverage`]): how an average is answered from a sum and a count kept apart (the
/// rollup rewrite's merged states).
pub fn decimal_average(result: DataType, sum: Expr, count: Expr) -> Expr {
    let udf = ScalarUDF::new_from_impl(DecimalAverage::new(result));
    Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(udf), vec![sum, count]))
}

/// `sum / count` as DataFusion's decimal average computes it: the sum brought to the
/// result's scale, divided by the count (truncated), and checked against the result's
/// precision; null where there is no value.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct DecimalAverage {
    pub(crate) result: DataType,
    signature: Signature,
}

impl DecimalAverage {
    pub(crate) fn new(result: DataType) -> Self {
        DecimalAverage {
            result,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for DecimalAverage {
    fn name(&self) -> &str {
        "decimal_avg"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(self.result.clone())
    }

    fn return_field_from_args(&self, _args: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(self.name(), self.result.clone(), true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [sum, count] = args.args.as_slice() else {
            return internal_err!("decimal_avg takes a sum and a count");
        };
        // The call's result type (a worker's copy, found by name, knows none of its own).
        let result = args.return_field.data_type();
        let DataType::Decimal128(precision, scale) = *result else {
            return internal_err!("decimal_avg gives a Decimal128, not {result}");
        };
        let DataType::Decimal128(_, sum_scale) = sum.data_type() else {
            return internal_err!("decimal_avg divides a Decimal128, not {}", sum.data_type());
        };
        let Some(factor) = u32::try_from(scale - sum_scale)
            .ok()
            .and_then(|d| 10i128.checked_pow(d))
        else {
            return exec_err!("Arithmetic Overflow in AvgAccumulator");
        };
        let rows = args.number_rows;
        let sum = sum.to_array(rows)?;
        let count = arrow::compute::cast(&count.to_array(rows)?, &DataType::Int64)?;
        let sum = sum.as_primitive::<Decimal128Type>();
        let count: &Int64Array = count.as_primitive();
        let mut values = Vec::with_capacity(rows);
        for i in 0..rows {
            if sum.is_null(i) || count.is_null(i) || count.value(i) == 0 {
                values.push(None);
                continue;
            }
            let scaled = sum.value(i).checked_mul(factor);
            let average = scaled.map(|v| v / i128::from(count.value(i)));
            match average {
                Some(v) if Decimal128Type::is_valid_decimal_precision(v, precision) => {
                    values.push(Some(v));
                }
                _ => return exec_err!("Arithmetic Overflow in AvgAccumulator"),
            }
        }
        let array = Decimal128Array::from(values).with_precision_and_scale(precision, scale)?;
        if rows == 1
            && args
                .args
                .iter()
                .all(|a| matches!(a, ColumnarValue::Scalar(_)))
        {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &array, 0,
            )?));
        }
        Ok(ColumnarValue::Array(Arc::new(array)))
    }
}

#[cfg(test)]
mod tests {
    // A test fails by panicking: each `expect` names the step that failed (building a
    // fixture, planning, running). None of this is compiled outside tests.
    use super::*;
    use crate::testing::{optimized, rows, session};
    use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray};
    use arrow::datatypes::Schema;
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    /// Rows in four groups: a decimal never null, a decimal null in some rows (and in all
    /// of group `d`'s), and a float.
    fn context() -> SessionContext {
        let ctx = session();
        let n = 1000i128;
        let decimal = |v: Vec<Option<i128>>| -> ArrayRef {
            Arc::new(
                Decimal128Array::from(v)
                    .with_precision_and_scale(15, 2)
                    .expect("decimal"),
            )
        };
        let groups: Vec<&str> = (0..n)
            .map(|i| ["a", "b", "c", "d"][(i % 4) as usize])
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Utf8, false),
            Field::new("q", DataType::Decimal128(15, 2), false),
            Field::new("p", DataType::Decimal128(15, 2), true),
            Field::new("f", DataType::Float64, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(groups)),
                decimal((0..n).map(|i| Some(i * 7919 % 10_007 - 3_000)).collect()),
                decimal(
                    (0..n)
                        .map(|i| (i % 4 != 3 && i % 5 != 0).then_some(i * 104_729 % 99_991))
                        .collect(),
                ),
                Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|i| (i as f64) / 7.0),
                )),
            ],
        )
        .expect("batch");
        let table = MemTable::try_new(schema, vec![vec![batch]]).expect("table");
        ctx.register_table("t", Arc::new(table)).expect("register");
        ctx
    }

    /// How many averages the optimized plan's aggregations still take.
    async fn averages(ctx: &SessionContext, sql: &str) -> usize {
        let plan = optimized(ctx, sql).await;
        let mut averages = 0;
        plan.apply(|n| {
            if let LogicalPlan::Aggregate(a) = n {
                averages += a
                    .aggr_expr
                    .iter()
                    .filter(|e| matches!(e, Expr::AggregateFunction(f) if f.func.name() == "avg"))
                    .count();
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .expect("walk");
        averages
    }

    /// Answers with the rule and without it, and the averages left in the plan with it.
    async fn both(sql: &str) -> (Vec<String>, Vec<String>, usize) {
        let ctx = context();
        let left = averages(&ctx, sql).await;
        let with = rows(&ctx, sql).await;
        rows(&ctx, "SET tarn.avg_from_sums = false").await;
        let without = rows(&ctx, sql).await;
        (with, without, left)
    }

    #[tokio::test]
    async fn averages_share_the_sums_and_counts_and_stay_exact() {
        // TPC-H Q1's shape, with a column that has nulls (its count is its own) and a
        // group where it is always null.
        let sql = "SELECT g, sum(q), avg(q), sum(p), avg(p), avg(q * 2), count(*), \
                   avg(p) + 1 AS shifted, avg(q * 2) AS again FROM t GROUP BY g ORDER BY g";
        let (with, without, left) = both(sql).await;
        assert_eq!(left, 0, "every average is a division");
        assert_eq!(with, without);
        assert_eq!(with.len(), 8, "{with:?}");
        let d = with
            .iter()
            .find(|l| l.starts_with("| d "))
            .expect("group d");
        let cells: Vec<&str> = d.split('|').map(str::trim).collect();
        // Group d's q, summed and averaged here (truncated at the sixth decimal).
        let q: Vec<i128> = (0..1000i128)
            .filter(|i| i % 4 == 3)
            .map(|i| i * 7919 % 10_007 - 3_000)
            .collect();
        let sum: i128 = q.iter().sum();
        let shown = |v: i128, precision: u8, scale: i8| {
            let a = Decimal128Array::from(vec![v])
                .with_precision_and_scale(precision, scale)
                .expect("decimal");
            arrow::util::display::array_value_to_string(&a, 0).expect("shown")
        };
        let (sum, average) = (
            shown(sum, 25, 2),
            shown(sum * 10_000 / q.len() as i128, 19, 6),
        );
        assert_eq!(cells[1..6], ["d", &sum, &average, "", ""], "{d}");
    }

    #[tokio::test]
    async fn an_average_over_no_rows_is_null_and_over_all_rows_exact() {
        for sql in [
            "SELECT sum(q), avg(q), count(*) FROM t",
            "SELECT sum(q), avg(q), count(*), avg(p), count(p) FROM t WHERE f < 0",
            "SELECT g, avg(q), count(q) FROM t WHERE q > 0 GROUP BY g ORDER BY g",
        ] {
            let (with, without, left) = both(sql).await;
            assert_eq!(left, 0, "{sql}");
            assert_eq!(with, without, "{sql}");
            assert!(with.len() >= 5, "{sql}: {with:?}");
        }
    }

    #[tokio::test]
    async fn averages_that_would_save_nothing_or_are_floats_are_left_alone() {
        for sql in [
            // Nothing to share.
            "SELECT g, avg(q) FROM t GROUP BY g ORDER BY g",
            // Floats' sums depend on the order they are added in.
            "SELECT g, avg(f), sum(f), count(*) FROM t GROUP BY g ORDER BY g",
            // A distinct average is another aggregate.
            "SELECT g, avg(DISTINCT q), sum(q), count(*) FROM t GROUP BY g ORDER BY g",
        ] {
            let (with, without, left) = both(sql).await;
            assert_eq!(left, 1, "{sql}");
            assert_eq!(with, without, "{sql}");
        }
    }
}
