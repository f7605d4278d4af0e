//! Presto's `try(expression)`: the expression's value, or NULL where evaluating it fails
//! for a row (a cast that does not convert, a division by zero, text a function cannot
//! parse).
//!
//! DataFusion evaluates a function's arguments before calling it, so `try` cannot catch
//! its argument's errors when it runs. It rewrites its argument when the query is
//! simplified instead, so that nothing inside it fails: casts become `TRY_CAST`, division
//! and remainder by zero give NULL, and every scalar function is called through
//! [`Lenient`], which evaluates the batch again row by row when the function fails and
//! gives NULL for the rows that fail.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, new_null_array};
use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    BinaryExpr, Cast, ColumnarValue, Expr, Operator, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, TryCast, Volatility, lit, when,
};
use datafusion::scalar::ScalarValue;

/// `try(x)`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Try {
    signature: Signature,
}

/// The `try` function.
pub fn try_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(Try {
        signature: Signature::any(1, Volatility::Immutable),
    })
}

impl ScalarUDFImpl for Try {
    fn name(&self) -> &str {
        "try"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        arg_types
            .first()
            .cloned()
            .ok_or_else(|| DataFusionError::Plan("try takes one argument".into()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        // Reached only when the query was not simplified: the argument evaluated, so it
        // did not fail.
        args.args
            .into_iter()
            .next()
            .ok_or_else(|| DataFusionError::Plan("try takes one argument".into()))
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        let [argument] = <[Expr; 1]>::try_from(args).map_err(|a| {
            DataFusionError::Plan(format!("try takes one argument, not {}", a.len()))
        })?;
        Ok(ExprSimplifyResult::Simplified(never_failing(
            argument, info,
        )?))
    }
}

/// `expression` rewritten so that a row whose evaluation would fail gives NULL (the query
/// was type-checked already, so what is added is typed as what it replaces).
fn never_failing(expression: Expr, info: &SimplifyContext) -> Result<Expr> {
    expression
        .transform_up(|e| {
            Ok(match e {
                Expr::Cast(Cast { expr, field }) => {
                    Transformed::yes(Expr::TryCast(TryCast::new_from_field(expr, field)))
                }
                // Integer and decimal division by zero fails; a float's gives an infinity
                // or NaN, as in Presto, and is left alone.
                Expr::BinaryExpr(BinaryExpr {
                    left,
                    op: op @ (Operator::Divide | Operator::Modulo),
                    right,
                }) if divides_exactly(&info.get_data_type(&right)?) => {
                    let zero = ScalarValue::new_zero(&info.get_data_type(&right)?)?;
                    let is_zero = Expr::BinaryExpr(BinaryExpr::new(
                        right.clone(),
                        Operator::Eq,
                        Box::new(lit(zero)),
                    ));
                    let guarded = Expr::BinaryExpr(BinaryExpr::new(left, op, right));
                    let null = ScalarValue::try_from(&info.get_data_type(&guarded)?)?;
                    Transformed::yes(when(is_zero, lit(null)).otherwise(guarded)?)
                }
                Expr::ScalarFunction(ScalarFunction { func, args })
                    if !func.inner().is::<Lenient>() =>
                {
                    let lenient = ScalarUDF::new_from_impl(Lenient {
                        name: format!("try_{}", func.name()),
                        inner: func,
                    });
                    Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(
                        Arc::new(lenient),
                        args,
                    )))
                }
                other => Transformed::no(other),
            })
        })
        .map(|t| t.data)
}

/// Whether division by a zero of type `t` fails (integers and decimals).
fn divides_exactly(t: &DataType) -> bool {
    t.is_integer()
        || matches!(
            t,
            DataType::Decimal32(..)
                | DataType::Decimal64(..)
                | DataType::Decimal128(..)
                | DataType::Decimal256(..)
        )
}

/// A scalar function whose rows that fail give NULL.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Lenient {
    name: String,
    inner: Arc<ScalarUDF>,
}

impl ScalarUDFImpl for Lenient {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let field = self.inner.return_field_from_args(args)?;
        Ok(Arc::new(field.as_ref().clone().with_nullable(true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match self.inner.invoke_with_args(args.clone()) {
            Ok(value) => Ok(value),
            Err(_) => self.row_by_row(args),
        }
    }
}

impl Lenient {
    /// The function evaluated one row at a time, NULL where it fails.
    fn row_by_row(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let return_type = args.return_field.data_type().clone();
        let mut pieces: Vec<ArrayRef> = Vec::with_capacity(rows);
        for row in 0..rows {
            let one = ScalarFunctionArgs {
                args: args
                    .args
                    .iter()
                    .map(|a| match a {
                        ColumnarValue::Array(array) => ColumnarValue::Array(array.slice(row, 1)),
                        scalar => scalar.clone(),
                    })
                    .collect(),
                number_rows: 1,
                ..args.clone()
            };
            let piece = match self.inner.invoke_with_args(one) {
                Ok(value) => value.into_array(1)?,
                Err(_) => new_null_array(&return_type, 1),
            };
            pieces.push(piece);
        }
        let refs: Vec<&dyn Array> = pieces.iter().map(|p| p.as_ref()).collect();
        if refs.is_empty() {
            return Ok(ColumnarValue::Array(new_null_array(&return_type, 0)));
        }
        Ok(ColumnarValue::Array(arrow::compute::concat(&refs)?))
    }
}
