//! What the functions share: arguments as arrays, strings read as one type, and the
//! errors that name the function and the argument.

use arrow::array::{Array, ArrayRef, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs};

/// The call's arguments as arrays of the batch's length.
pub fn arrays(args: &ScalarFunctionArgs) -> Result<Vec<ArrayRef>> {
    ColumnarValue::values_to_arrays(&args.args)
}

/// `array` (any string type) as UTF-8 strings.
pub fn strings(array: &ArrayRef) -> Result<StringArray> {
    let utf8 = cast(array, &DataType::Utf8)?;
    Ok(utf8
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .unwrap_or_else(|| StringArray::new_null(utf8.len())))
}

/// Whether `t` is read as a string by [`strings`].
pub fn is_string(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
    ) || matches!(t, DataType::Dictionary(_, v) if is_string(v))
}

/// The error of `function` called with `found` where it takes `expected`.
pub fn wrong_type(
    function: &str,
    position: usize,
    expected: &str,
    found: &DataType,
) -> DataFusionError {
    DataFusionError::Plan(format!(
        "{function}: argument {position} must be {expected}, not {found}"
    ))
}

/// The error of `function` called with `n` arguments where it takes `expected`.
pub fn wrong_count(function: &str, expected: &str, n: usize) -> DataFusionError {
    DataFusionError::Plan(format!("{function} takes {expected} arguments, not {n}"))
}

/// Checks that every argument of `function` is a string and returns them as UTF-8.
pub fn all_strings(function: &str, arg_types: &[DataType]) -> Result<Vec<DataType>> {
    arg_types
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if is_string(t) {
                Ok(DataType::Utf8)
            } else {
                Err(wrong_type(function, i + 1, "a string", t))
            }
        })
        .collect()
}

/// How a [`Simple`] function coerces its arguments' types (an error names what it takes).
pub type Coerce = fn(&str, &[DataType]) -> Result<Vec<DataType>>;
/// A [`Simple`] function's result type for its (coerced) argument types.
pub type ReturnType = fn(&[DataType]) -> Result<DataType>;
/// A [`Simple`] function's body: the arguments as arrays, the result type, the rows.
pub type Body = fn(&[ArrayRef], &DataType) -> Result<ArrayRef>;

/// A scalar function given by three plain functions: the shape of every function of
/// this crate written row by row. Two are the same function when their names are.
#[derive(Debug)]
pub struct Simple {
    name: &'static str,
    aliases: Vec<String>,
    signature: datafusion::logical_expr::Signature,
    coerce: Coerce,
    return_type: ReturnType,
    body: Body,
}

impl Simple {
    pub fn udf(
        name: &'static str,
        aliases: &[&str],
        coerce: Coerce,
        return_type: ReturnType,
        body: Body,
    ) -> datafusion::logical_expr::ScalarUDF {
        datafusion::logical_expr::ScalarUDF::new_from_impl(Simple {
            name,
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            signature: datafusion::logical_expr::Signature::user_defined(
                datafusion::logical_expr::Volatility::Immutable,
            ),
            coerce,
            return_type,
            body,
        })
    }
}

impl PartialEq for Simple {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Simple {}

impl std::hash::Hash for Simple {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for Simple {
    fn name(&self) -> &str {
        self.name
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        (self.coerce)(self.name, arg_types)
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        (self.return_type)(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = arrays(&args)?;
        let out = (self.body)(&arrays, args.return_field.data_type())?;
        if args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)))
            && out.len() == 1
        {
            return Ok(ColumnarValue::Scalar(
                datafusion::scalar::ScalarValue::try_from_array(&out, 0)?,
            ));
        }
        Ok(ColumnarValue::Array(out))
    }
}

/// The result type of a function that returns strings.
pub fn utf8(_: &[DataType]) -> Result<DataType> {
    Ok(DataType::Utf8)
}

/// The result type of a function that returns 64-bit integers.
pub fn int64(_: &[DataType]) -> Result<DataType> {
    Ok(DataType::Int64)
}
