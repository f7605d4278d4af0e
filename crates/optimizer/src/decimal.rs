//! Decimal arithmetic without a per-value overflow check where a batch's values prove
//! that none can overflow.
//!
//! Arrow adds, subtracts and multiplies 128-bit decimals with a checked operation per
//! value (a multiplication calls out of line), and that check is about a fifth of a scan
//! that computes `price * (1 - discount) * (1 + tax)`. Money columns are nowhere near
//! the 38 digits the type allows, so once per batch this module bounds each operand by
//! its largest absolute value; when the bounds prove the result (and every intermediate
//! step) fits, the batch is computed with wrapping operations in a tight loop. Otherwise
//! Arrow's checked kernel runs as before, so results and errors are exactly the same.
//!
//! The rewrite happens after optimisation, when the physical plan is made: additions,
//! subtractions and multiplications of two `Decimal128` values in projections and
//! aggregate arguments become calls to a function that carries the result type the
//! planner chose, under the names the expressions had. Filters keep their operators, so
//! pruning still reads them.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, PrimitiveArray};
use arrow::compute::binary;
use arrow::datatypes::{DataType, Decimal128Type, Field, FieldRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    Aggregate, BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, Projection,
    ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr_common::datum::apply;

/// The operations rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Op {
    Add,
    Sub,
    Mul,
}

impl Op {
    fn of(op: &Operator) -> Option<Op> {
        match op {
            Operator::Plus => Some(Op::Add),
            Operator::Minus => Some(Op::Sub),
            Operator::Multiply => Some(Op::Mul),
            _ => None,
        }
    }

    /// The result type Arrow's kernel gives `Decimal128(p1, s1) op Decimal128(p2, s2)`
    /// (Hive's rules), for non-negative scales no larger than their precisions.
    fn result_type(self, (p1, s1): (u8, i8), (p2, s2): (u8, i8)) -> Option<DataType> {
        if s1 < 0 || s2 < 0 || s1 as u8 > p1 || s2 as u8 > p2 {
            return None;
        }
        let (p1, s1, p2, s2) = (i32::from(p1), i32::from(s1), i32::from(p2), i32::from(s2));
        let (precision, scale) = match self {
            Op::Add | Op::Sub => {
                let scale = s1.max(s2);
                (scale + (p1 - s1).max(p2 - s2) + 1, scale)
            }
            Op::Mul => (p1 + p2 + 1, s1 + s2),
        };
        let scale = i8::try_from(scale).ok().filter(|s| *s <= 38)?;
        Some(DataType::Decimal128(precision.min(38) as u8, scale))
    }

    /// Arrow's checked kernel, as DataFusion calls it.
    fn checked(
        self,
    ) -> fn(&dyn arrow::array::Datum, &dyn arrow::array::Datum) -> arrow::error::Result<ArrayRef>
    {
        use arrow::compute::kernels::numeric::{add_wrapping, mul_wrapping, sub_wrapping};
        match self {
            Op::Add => add_wrapping,
            Op::Sub => sub_wrapping,
            Op::Mul => mul_wrapping,
        }
    }
}

/// `left op right` for two decimals, with the result type the planner chose.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct DecimalArithmetic {
    pub(crate) op: Op,
    pub(crate) result: DataType,
    pub(crate) signature: Signature,
}

impl ScalarUDFImpl for DecimalArithmetic {
    fn name(&self) -> &str {
        match self.op {
            Op::Add => "decimal_add",
            Op::Sub => "decimal_sub",
            Op::Mul => "decimal_mul",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(self.result.clone())
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let nullable = args.arg_fields.iter().any(|f| f.is_nullable());
        Ok(Arc::new(Field::new(
            self.name(),
            self.result.clone(),
            nullable,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [left, right] = args.args.as_slice() else {
            return datafusion::common::internal_err!("{} takes two arguments", self.name());
        };
        // The result's type is the call's (a worker's copy of this function, found by
        // name, knows no type of its own).
        if let Some(result) = self.unchecked(left, right, args.return_field.data_type())? {
            return Ok(result);
        }
        apply(left, right, self.op.checked())
    }
}

impl DecimalArithmetic {
    /// The result computed without overflow checks, or `None` when the operands'
    /// bounds do not prove that nothing overflows (or an operand is a scalar null).
    fn unchecked(
        &self,
        left: &ColumnarValue,
        right: &ColumnarValue,
        result: &DataType,
    ) -> Result<Option<ColumnarValue>> {
        let DataType::Decimal128(precision, scale) = *result else {
            return Ok(None);
        };
        let (DataType::Decimal128(_, s1), DataType::Decimal128(_, s2)) =
            (left.data_type(), right.data_type())
        else {
            return Ok(None);
        };
        if matches!(
            (left, right),
            (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_))
        ) {
            return Ok(None);
        }
        let (Some(b1), Some(b2)) = (bound(left), bound(right)) else {
            return Ok(None);
        };
        // Factors that bring both operands to the result's scale (additions only).
        let factor = |s: i8| 10i128.checked_pow(u32::try_from(scale - s).ok()?);
        let (m1, m2) = match self.op {
            Op::Mul => (1, 1),
            Op::Add | Op::Sub => match (factor(s1), factor(s2)) {
                (Some(m1), Some(m2)) => (m1, m2),
                _ => return Ok(None),
            },
        };
        let fits = match self.op {
            Op::Mul => b1.checked_mul(b2),
            Op::Add | Op::Sub => b1
                .checked_mul(m1.unsigned_abs())
                .zip(b2.checked_mul(m2.unsigned_abs()))
                .and_then(|(a, b)| a.checked_add(b)),
        }
        .is_some_and(|b| b <= i128::MAX as u128);
        if !fits {
            return Ok(None);
        }
        let result = match (self.op, m1, m2) {
            (Op::Mul, _, _) => compute(left, right, |a, b| a.wrapping_mul(b)),
            (Op::Add, 1, 1) => compute(left, right, |a, b| a.wrapping_add(b)),
            (Op::Sub, 1, 1) => compute(left, right, |a, b| a.wrapping_sub(b)),
            (Op::Add, _, _) => compute(left, right, move |a, b| {
                a.wrapping_mul(m1).wrapping_add(b.wrapping_mul(m2))
            }),
            (Op::Sub, _, _) => compute(left, right, move |a, b| {
                a.wrapping_mul(m1).wrapping_sub(b.wrapping_mul(m2))
            }),
        }?;
        let result = result.with_precision_and_scale(precision, scale)?;
        Ok(Some(ColumnarValue::Array(Arc::new(result))))
    }
}

/// A bound on the absolute values of the operand's values, including any under nulls
/// (they are computed too, and wrapping cannot fail); `None` for a null scalar.
///
/// For an array it is less than twice the largest absolute value: one more than the
/// bitwise OR of the values' magnitudes in ones' complement (`v ^ (v >> 127)`, which is
/// `|v|` for `v >= 0` and `|v| - 1` below). ORs of 64-bit words vectorise where a
/// minimum and maximum of 128-bit integers does not.
fn bound(value: &ColumnarValue) -> Option<u128> {
    match value {
        ColumnarValue::Scalar(ScalarValue::Decimal128(v, _, _)) => v.map(i128::unsigned_abs),
        ColumnarValue::Scalar(_) => None,
        ColumnarValue::Array(array) => {
            // Each value as its low and high 64-bit words (Arrow's buffers are little
            // endian), the high word's sign flipping both.
            let values = array.as_primitive_opt::<Decimal128Type>()?.values();
            let (pairs, _) = values.inner().typed_data::<u64>().as_chunks::<2>();
            let (low, high) = pairs.iter().fold((0u64, 0u64), |(low, high), [l, h]| {
                let sign = ((*h as i64) >> 63) as u64;
                (low | (l ^ sign), high | (h ^ sign))
            });
            ((u128::from(high) << 64) | u128::from(low)).checked_add(1)
        }
    }
}

/// `f` applied to each pair of values (one side may be a scalar), nulls where either is.
fn compute(
    left: &ColumnarValue,
    right: &ColumnarValue,
    f: impl Fn(i128, i128) -> i128 + Copy,
) -> Result<PrimitiveArray<Decimal128Type>> {
    let scalar = |v: &ScalarValue| match v {
        ScalarValue::Decimal128(Some(v), _, _) => Some(*v),
        _ => None,
    };
    let unexpected = || {
        datafusion::common::DataFusionError::Internal(
            "decimal arithmetic on values that are not decimals".into(),
        )
    };
    Ok(match (left, right) {
        (ColumnarValue::Array(l), ColumnarValue::Array(r)) => binary(
            l.as_primitive_opt::<Decimal128Type>()
                .ok_or_else(unexpected)?,
            r.as_primitive_opt::<Decimal128Type>()
                .ok_or_else(unexpected)?,
            f,
        )?,
        (ColumnarValue::Array(l), ColumnarValue::Scalar(r)) => {
            let r = scalar(r).ok_or_else(unexpected)?;
            l.as_primitive_opt::<Decimal128Type>()
                .ok_or_else(unexpected)?
                .unary(|a| f(a, r))
        }
        (ColumnarValue::Scalar(l), ColumnarValue::Array(r)) => {
            let l = scalar(l).ok_or_else(unexpected)?;
            r.as_primitive_opt::<Decimal128Type>()
                .ok_or_else(unexpected)?
                .unary(|b| f(l, b))
        }
        (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_)) => return Err(unexpected()),
    })
}

/// `plan` with the decimal additions, subtractions and multiplications of its
/// projections and aggregate arguments computed by [`DecimalArithmetic`].
pub(super) fn rewrite(plan: LogicalPlan) -> Result<LogicalPlan> {
    Ok(plan.transform_up_with_subqueries(rewrite_node)?.data)
}

fn rewrite_node(node: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    let preserver = NamePreserver::new(&node);
    let rewrite_all = |exprs: &[Expr], schema: &DFSchema| -> Result<Option<Vec<Expr>>> {
        let mut changed = false;
        let exprs = exprs
            .iter()
            .map(|e| {
                let saved = preserver.save(e);
                let t = e.clone().transform_up(|e| rewrite_expr(e, schema))?;
                changed |= t.transformed;
                Ok(if t.transformed {
                    saved.restore(t.data)
                } else {
                    t.data
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(changed.then_some(exprs))
    };
    let rewritten = match &node {
        LogicalPlan::Projection(p) => match rewrite_all(&p.expr, p.input.schema())? {
            Some(exprs) => LogicalPlan::Projection(Projection::try_new_with_schema(
                exprs,
                Arc::clone(&p.input),
                Arc::clone(&p.schema),
            )?),
            None => return Ok(Transformed::no(node)),
        },
        LogicalPlan::Aggregate(a) => match rewrite_all(&a.aggr_expr, a.input.schema())? {
            Some(exprs) => LogicalPlan::Aggregate(Aggregate::try_new_with_schema(
                Arc::clone(&a.input),
                a.group_expr.clone(),
                exprs,
                Arc::clone(&a.schema),
            )?),
            None => return Ok(Transformed::no(node)),
        },
        _ => return Ok(Transformed::no(node)),
    };
    Ok(Transformed::yes(rewritten))
}

fn rewrite_expr(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &expr else {
        return Ok(Transformed::no(expr));
    };
    let types = (left.get_type(schema).ok(), right.get_type(schema).ok());
    let (Some(op), (Some(DataType::Decimal128(p1, s1)), Some(DataType::Decimal128(p2, s2)))) =
        (Op::of(op), types)
    else {
        return Ok(Transformed::no(expr));
    };
    // Only where the planner chose the type Arrow's kernel gives (it always should).
    let Some(result) = op.result_type((p1, s1), (p2, s2)) else {
        return Ok(Transformed::no(expr));
    };
    if expr.get_type(schema).ok().as_ref() != Some(&result) {
        return Ok(Transformed::no(expr));
    }
    let udf = ScalarUDF::new_from_impl(DecimalArithmetic {
        op,
        result,
        signature: Signature::any(2, Volatility::Immutable),
    });
    let args = vec![left.as_ref().clone(), right.as_ref().clone()];
    Ok(Transformed::yes(Expr::ScalarFunction(
        ScalarFunction::new_udf(Arc::new(udf), args),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Decimal128Array, RecordBatch};
    use arrow::datatypes::Schema;
    use datafusion::datasource::MemTable;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::SessionContext;

    /// `n` decimals of up to `digits` digits at `(precision, scale)`, about one in seven
    /// null, from a fixed seed.
    fn decimals(n: usize, digits: u32, precision: u8, scale: i8, seed: u64) -> Decimal128Array {
        let mut state = seed;
        let limit = 10i128.pow(digits);
        (0..n)
            .map(|_| {
                let mut next = || {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    state >> 11
                };
                let wide = (i128::from(next()) << 53) | i128::from(next());
                let v = wide % limit * if state & 1 == 0 { 1 } else { -1 };
                (!state.is_multiple_of(7)).then_some(v)
            })
            .collect::<Decimal128Array>()
            .with_precision_and_scale(precision, scale)
            .expect("valid decimal type")
    }

    fn udf(op: Op, left: &DataType, right: &DataType) -> DecimalArithmetic {
        let (DataType::Decimal128(p1, s1), DataType::Decimal128(p2, s2)) = (left, right) else {
            panic!("decimal types expected");
        };
        DecimalArithmetic {
            op,
            result: op.result_type((*p1, *s1), (*p2, *s2)).expect("result type"),
            signature: Signature::any(2, Volatility::Immutable),
        }
    }

    fn array(value: &ColumnarValue) -> ArrayRef {
        match value {
            ColumnarValue::Array(a) => Arc::clone(a),
            ColumnarValue::Scalar(s) => s.to_array().expect("scalar to array"),
        }
    }

    #[test]
    fn unchecked_results_equal_arrows_checked_kernel() {
        let price = ColumnarValue::Array(Arc::new(decimals(4096, 9, 15, 2, 1)));
        let discount = ColumnarValue::Array(Arc::new(decimals(4096, 2, 15, 2, 2)));
        let rate = ColumnarValue::Array(Arc::new(decimals(4096, 6, 12, 5, 3)));
        let one = ColumnarValue::Scalar(ScalarValue::Decimal128(Some(1), 20, 0));
        let cents = ColumnarValue::Scalar(ScalarValue::Decimal128(Some(-250), 10, 2));
        let pairs = [
            (&price, &discount),
            (&price, &rate),
            (&rate, &price),
            (&one, &discount),
            (&discount, &one),
            (&rate, &cents),
            (&cents, &price),
        ];
        for op in [Op::Add, Op::Sub, Op::Mul] {
            for (left, right) in pairs {
                let f = udf(op, &left.data_type(), &right.data_type());
                let fast = f
                    .unchecked(left, right, &f.result)
                    .expect("no error")
                    .unwrap_or_else(|| panic!("{op:?} {left:?} {right:?} should be proven"));
                let checked = apply(left, right, op.checked()).expect("checked kernel");
                let (fast, checked) = (array(&fast), array(&checked));
                assert_eq!(fast.data_type(), checked.data_type(), "{op:?}");
                assert_eq!(&fast, &checked, "{op:?} {left:?} {right:?}");
                assert_eq!(fast.data_type(), &f.result);
            }
        }
    }

    /// `f(left, right)` through the function's entry point.
    fn call(
        f: &DecimalArithmetic,
        left: &ColumnarValue,
        right: &ColumnarValue,
        rows: usize,
    ) -> Result<ColumnarValue> {
        let field = |v: &ColumnarValue| Arc::new(Field::new("a", v.data_type(), true));
        f.invoke_with_args(ScalarFunctionArgs {
            args: vec![left.clone(), right.clone()],
            arg_fields: vec![field(left), field(right)],
            number_rows: rows,
            return_field: Arc::new(Field::new("r", f.result.clone(), true)),
            config_options: Default::default(),
        })
    }

    #[test]
    fn an_arrays_bound_is_at_least_its_largest_magnitude_and_under_twice_it() {
        let extremes = [i128::MIN, i128::MIN + 1, -1, 0, 1, i128::MAX];
        let mut cases: Vec<Vec<i128>> = extremes.iter().map(|v| vec![*v]).collect();
        cases.push(vec![-5, 3, 0]);
        cases.push(vec![4, -4]);
        cases.push(vec![]);
        for digits in [2, 9, 18, 30, 38] {
            cases.push(
                decimals(257, digits, 38, 0, u64::from(digits))
                    .values()
                    .to_vec(),
            );
        }
        for values in cases {
            // The whole array, and a slice past its first value (an offset buffer).
            let array = Decimal128Array::from(values.clone());
            let skip = values.len().min(1);
            for (array, values) in [
                (array.clone(), &values[..]),
                (array.slice(skip, values.len() - skip), &values[skip..]),
            ] {
                let largest = values.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0);
                let bound = bound(&ColumnarValue::Array(Arc::new(array))).expect("array");
                assert!(bound >= largest, "{values:?}: {bound} < {largest}");
                assert!(
                    bound <= largest.saturating_mul(2).max(1),
                    "{values:?}: {bound}"
                );
            }
        }
    }

    #[test]
    fn large_values_fall_back_to_the_checked_kernel() {
        // 30-digit values: their product may not fit in 128 bits.
        let big = ColumnarValue::Array(Arc::new(decimals(64, 30, 38, 0, 4)));
        let f = udf(Op::Mul, &big.data_type(), &big.data_type());
        assert!(
            f.unchecked(&big, &big, &f.result)
                .expect("no error")
                .is_none()
        );
        // Through the function, the overflow is Arrow's error, as without the rewrite.
        let error = call(&f, &big, &big, 64).expect_err("overflow");
        let expected = apply(&big, &big, Op::Mul.checked()).expect_err("overflow");
        assert_eq!(error.to_string(), expected.to_string());
        // A sum whose bounds just do not fit is also left to Arrow, which computes it.
        let max = ColumnarValue::Scalar(ScalarValue::Decimal128(Some(i128::MAX - 1), 38, 0));
        let small = ColumnarValue::Array(Arc::new(
            Decimal128Array::from(vec![-1i128, -2])
                .with_precision_and_scale(38, 0)
                .expect("type"),
        ));
        let f = udf(Op::Add, &max.data_type(), &small.data_type());
        assert!(
            f.unchecked(&max, &max, &f.result)
                .expect("no error")
                .is_none()
        );
        assert!(
            f.unchecked(&max, &small, &f.result)
                .expect("no error")
                .is_none()
        );
        let sum = call(&f, &max, &small, 2);
        let expected = apply(&max, &small, Op::Add.checked()).expect("fits");
        let (sum, expected) = (array(&sum.expect("fits")), array(&expected));
        assert_eq!(&sum, &expected);
    }

    fn context(fast: bool) -> SessionContext {
        let state = crate::test_state(2, |o| o.decimal_fast_path = fast).build();
        let ctx = SessionContext::new_with_state(state);
        let columns: Vec<(&str, Decimal128Array)> = vec![
            ("price", decimals(3000, 8, 15, 2, 5)),
            ("discount", decimals(3000, 2, 15, 2, 6)),
            ("rate", decimals(3000, 5, 10, 4, 7)),
            ("big", decimals(3000, 25, 38, 0, 8)),
        ];
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ));
        let batches = (0..3)
            .map(|i| {
                let arrays = columns
                    .iter()
                    .map(|(_, a)| Arc::new(a.slice(i * 1000, 1000)) as ArrayRef)
                    .collect();
                RecordBatch::try_new(Arc::clone(&schema), arrays).expect("batch")
            })
            .map(|b| vec![b])
            .collect();
        let table = MemTable::try_new(schema, batches).expect("table");
        ctx.register_table("t", Arc::new(table)).expect("register");
        ctx
    }

    async fn run(ctx: &SessionContext, sql: &str) -> Result<(Vec<RecordBatch>, String)> {
        let df = ctx.sql(sql).await?;
        let plan = df.clone().create_physical_plan().await?;
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        Ok((df.collect().await?, shown))
    }

    #[tokio::test]
    async fn queries_answer_the_same_with_and_without_the_fast_path() {
        let queries = [
            "SELECT price * (1 - discount) AS net, price - rate, rate + 0.5 FROM t ORDER BY 1, 2, 3",
            "SELECT discount, sum(price * (1 - discount) * (1 + rate)), sum(price * discount), \
             avg(rate * 2), count(*) FROM t GROUP BY discount ORDER BY discount",
            "SELECT sum(big * 3), sum(big + price) FROM t",
            "SELECT d, total FROM (SELECT discount AS d, sum(price * rate) AS total FROM t \
             GROUP BY discount) WHERE total > 0 ORDER BY d",
        ];
        let (fast, checked) = (context(true), context(false));
        for sql in queries {
            let (fast_rows, fast_plan) = run(&fast, sql).await.expect("fast path");
            let (checked_rows, checked_plan) = run(&checked, sql).await.expect("checked");
            assert_eq!(fast_rows, checked_rows, "{sql}");
            assert!(
                fast_rows.iter().map(|b| b.num_rows()).sum::<usize>() > 0,
                "{sql}"
            );
            assert!(
                fast_plan.contains("decimal_"),
                "{sql} not rewritten:\n{fast_plan}"
            );
            assert!(!checked_plan.contains("decimal_"), "{sql}:\n{checked_plan}");
        }
    }

    #[tokio::test]
    async fn overflow_is_the_same_error_and_filters_keep_their_operators() {
        let sql = "SELECT big * big * big FROM t";
        let fast = run(&context(true), sql).await.expect_err("overflow");
        let checked = run(&context(false), sql).await.expect_err("overflow");
        assert_eq!(fast.to_string(), checked.to_string());
        assert!(fast.to_string().contains("Overflow"), "{fast}");

        let sql = "SELECT count(*) FROM t WHERE price * discount > 100";
        let (rows, plan) = run(&context(true), sql).await.expect("filter");
        assert!(!plan.contains("decimal_"), "{plan}");
        let (expected, _) = run(&context(false), sql).await.expect("filter");
        assert_eq!(rows, expected);
    }
}
