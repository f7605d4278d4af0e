//! Presto's `element_at` (a map's value or an array's element, NULL when missing),
//! `split` and `regexp_extract`.

use crate::args::{Simple, is_string, strings, utf8, wrong_count, wrong_type};
use arrow::array::{Array, ArrayRef, Int64Array, ListBuilder, StringArray, StringBuilder};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::functions_nested::extract::array_element_udf;
use datafusion::functions_nested::map_extract::map_extract_udf;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::scalar::ScalarValue;
use regex::Regex;
use std::sync::Arc;

/// The functions of this module.
pub fn functions() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(ElementAt::new()),
        Simple::udf("split", &[], coerce_split, list_of_strings, split),
        Simple::udf(
            "regexp_extract",
            &[],
            coerce_regexp_extract,
            utf8,
            regexp_extract,
        ),
    ]
}

fn list_of_strings(_: &[DataType]) -> Result<DataType> {
    Ok(DataType::List(Arc::new(Field::new_list_field(
        DataType::Utf8,
        true,
    ))))
}

/// `element_at(map, key)`: the key's value or NULL; `element_at(array, index)`: the
/// element (from 1, negative from the end) or NULL. DataFusion's `map_extract` and
/// `array_element` do the work.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ElementAt {
    signature: Signature,
}

impl ElementAt {
    fn new() -> Self {
        ElementAt {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// The element type of a list type, or the value type of a map type.
fn inner(t: &DataType) -> Option<(bool, FieldRef)> {
    match t {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            Some((false, Arc::clone(f)))
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(fields) if fields.len() == 2 => Some((true, Arc::clone(&fields[1]))),
            _ => None,
        },
        _ => None,
    }
}

impl ScalarUDFImpl for ElementAt {
    fn name(&self) -> &str {
        "element_at"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, types: &[DataType]) -> Result<Vec<DataType>> {
        let [container, key] = types else {
            return Err(wrong_count("element_at", "2", types.len()));
        };
        match container {
            DataType::Map(entries, _) => match entries.data_type() {
                DataType::Struct(fields) if fields.len() == 2 => {
                    Ok(vec![container.clone(), fields[0].data_type().clone()])
                }
                _ => Err(wrong_type("element_at", 1, "a map or an array", container)),
            },
            _ if inner(container).is_some() => {
                if key.is_integer() || key.is_null() {
                    Ok(vec![container.clone(), DataType::Int64])
                } else {
                    Err(wrong_type("element_at", 2, "an integer index", key))
                }
            }
            _ => Err(wrong_type("element_at", 1, "a map or an array", container)),
        }
    }

    fn return_type(&self, types: &[DataType]) -> Result<DataType> {
        types
            .first()
            .and_then(inner)
            .map(|(_, f)| f.data_type().clone())
            .ok_or_else(|| DataFusionError::Plan("element_at takes a map or an array".into()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let is_map = args
            .arg_fields
            .first()
            .and_then(|f| inner(f.data_type()))
            .is_some_and(|(m, _)| m);
        if !is_map {
            return call(
                &array_element_udf(),
                args.args.clone(),
                args.arg_fields.clone(),
                &args,
            );
        }
        // The map's values for the key, as a list of zero or one, then its first.
        let values = call(
            &map_extract_udf(),
            args.args.clone(),
            args.arg_fields.clone(),
            &args,
        )?;
        let list_field = Arc::new(Field::new("values", values.data_type(), true));
        let one = Arc::new(Field::new("index", DataType::Int64, false));
        call(
            &array_element_udf(),
            vec![values, ColumnarValue::Scalar(ScalarValue::Int64(Some(1)))],
            vec![list_field, one],
            &args,
        )
    }
}

/// Calls `udf` on `values` within the outer call `outer`.
fn call(
    udf: &ScalarUDF,
    values: Vec<ColumnarValue>,
    fields: Vec<FieldRef>,
    outer: &ScalarFunctionArgs,
) -> Result<ColumnarValue> {
    let scalars: Vec<Option<&ScalarValue>> = values
        .iter()
        .map(|v| match v {
            ColumnarValue::Scalar(s) => Some(s),
            ColumnarValue::Array(_) => None,
        })
        .collect();
    let return_field = udf.return_field_from_args(ReturnFieldArgs {
        arg_fields: &fields,
        scalar_arguments: &scalars,
    })?;
    udf.invoke_with_args(ScalarFunctionArgs {
        args: values,
        arg_fields: fields,
        number_rows: outer.number_rows,
        return_field,
        config_options: Arc::clone(&outer.config_options),
    })
}

fn coerce_split(function: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    match types {
        [s, d] if is_string(s) && is_string(d) => Ok(vec![DataType::Utf8, DataType::Utf8]),
        [s, d, n] if is_string(s) && is_string(d) && (n.is_integer() || n.is_null()) => {
            Ok(vec![DataType::Utf8, DataType::Utf8, DataType::Int64])
        }
        [_, _] | [_, _, _] => Err(DataFusionError::Plan(format!(
            "{function} takes (string, delimiter[, limit]), not ({})",
            types
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        _ => Err(wrong_count(function, "2 or 3", types.len())),
    }
}

fn limits(args: &[ArrayRef]) -> Result<Option<Int64Array>> {
    args.get(2)
        .map(|a| {
            cast(a, &DataType::Int64)?
                .as_any()
                .downcast_ref::<Int64Array>()
                .cloned()
                .ok_or_else(|| DataFusionError::Internal("split limit".into()))
        })
        .transpose()
}

fn split(args: &[ArrayRef], _: &DataType) -> Result<ArrayRef> {
    let (texts, delimiters) = (strings(&args[0])?, strings(&args[1])?);
    let limits = limits(args)?;
    let mut out = ListBuilder::new(StringBuilder::new());
    for i in 0..texts.len() {
        if texts.is_null(i)
            || delimiters.is_null(i)
            || limits.as_ref().is_some_and(|l| l.is_null(i))
        {
            out.append_null();
            continue;
        }
        let (text, delimiter) = (texts.value(i), delimiters.value(i));
        if delimiter.is_empty() {
            return Err(DataFusionError::Execution(
                "split: the delimiter must not be empty".into(),
            ));
        }
        match limits.as_ref().map(|l| l.value(i)) {
            Some(limit) if limit <= 0 => {
                return Err(DataFusionError::Execution(format!(
                    "split: the limit must be positive, not {limit}"
                )));
            }
            Some(limit) => {
                let parts = usize::try_from(limit).unwrap_or(usize::MAX);
                text.splitn(parts, delimiter)
                    .for_each(|p| out.values().append_value(p));
            }
            None => text
                .split(delimiter)
                .for_each(|p| out.values().append_value(p)),
        }
        out.append(true);
    }
    Ok(Arc::new(out.finish()))
}

fn coerce_regexp_extract(function: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    match types {
        [s, p] if is_string(s) && is_string(p) => Ok(vec![DataType::Utf8, DataType::Utf8]),
        [s, p, g] if is_string(s) && is_string(p) && (g.is_integer() || g.is_null()) => {
            Ok(vec![DataType::Utf8, DataType::Utf8, DataType::Int64])
        }
        [_, _] | [_, _, _] => Err(DataFusionError::Plan(format!(
            "{function} takes (string, pattern[, group])"
        ))),
        _ => Err(wrong_count(function, "2 or 3", types.len())),
    }
}

fn regexp_extract(args: &[ArrayRef], _: &DataType) -> Result<ArrayRef> {
    let (texts, patterns) = (strings(&args[0])?, strings(&args[1])?);
    let groups = limits(args)?;
    let mut last: Option<(String, Regex)> = None;
    let mut out: Vec<Option<String>> = Vec::with_capacity(texts.len());
    for i in 0..texts.len() {
        if texts.is_null(i) || patterns.is_null(i) || groups.as_ref().is_some_and(|g| g.is_null(i))
        {
            out.push(None);
            continue;
        }
        let pattern = patterns.value(i);
        if last.as_ref().is_none_or(|(p, _)| p != pattern) {
            let re = Regex::new(pattern).map_err(|e| {
                DataFusionError::Execution(format!(
                    "regexp_extract: invalid pattern '{pattern}': {e}"
                ))
            })?;
            last = Some((pattern.to_string(), re));
        }
        let Some((_, re)) = last.as_ref() else {
            continue;
        };
        let group = groups.as_ref().map_or(0, |g| g.value(i));
        let index = usize::try_from(group)
            .ok()
            .filter(|g| *g < re.captures_len())
            .ok_or_else(|| {
                DataFusionError::Execution(format!(
                    "regexp_extract: pattern '{pattern}' has no group {group}"
                ))
            })?;
        out.push(
            re.captures(texts.value(i))
                .and_then(|c| c.get(index))
                .map(|m| m.as_str().to_string()),
        );
    }
    Ok(Arc::new(StringArray::from(out)))
}
