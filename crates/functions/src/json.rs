//! Presto's JSON functions, with JSON held as text (Presto's `JSON` type is a string
//! here): `json_extract` and `json_size` return JSON text, `json_extract_scalar` the text
//! of a scalar. Paths are the JSONPath subset Presto documents: `$`, `.key`, `["key"]`,
//! `['key']`, `[index]`. A value that is not valid JSON reads as NULL, as in Presto;
//! `json_parse` alone refuses it.

use crate::args::{Simple, all_strings, int64, strings, utf8, wrong_count};
use arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, StringArray};
use arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::ScalarUDF;
use serde_json::Value;
use std::sync::Arc;

/// The JSON functions of this module.
pub fn functions() -> Vec<ScalarUDF> {
    vec![
        Simple::udf("json_extract", &[], two_strings, utf8, json_extract),
        Simple::udf(
            "json_extract_scalar",
            &[],
            two_strings,
            utf8,
            json_extract_scalar,
        ),
        Simple::udf("json_size", &[], two_strings, int64, json_size),
        Simple::udf(
            "json_array_length",
            &[],
            one_string,
            int64,
            json_array_length,
        ),
        Simple::udf("json_format", &[], one_string, utf8, json_format),
        Simple::udf("json_parse", &[], one_string, utf8, json_parse),
        Simple::udf("is_json_scalar", &[], one_string, boolean, is_json_scalar),
    ]
}

fn boolean(_: &[DataType]) -> Result<DataType> {
    Ok(DataType::Boolean)
}

fn two_strings(function: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    if types.len() != 2 {
        return Err(wrong_count(function, "2", types.len()));
    }
    all_strings(function, types)
}

fn one_string(function: &str, types: &[DataType]) -> Result<Vec<DataType>> {
    if types.len() != 1 {
        return Err(wrong_count(function, "1", types.len()));
    }
    all_strings(function, types)
}

/// One step of a JSON path.
#[derive(Debug, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Parses a JSON path (`$.a.b[0]`, `$["a b"]`).
fn parse_path(function: &str, path: &str) -> Result<Vec<Step>> {
    let bad = |why: &str| {
        DataFusionError::Execution(format!("{function}: invalid JSON path '{path}': {why}"))
    };
    let rest = path.trim();
    let mut rest = rest
        .strip_prefix('$')
        .ok_or_else(|| bad("it must start with $"))?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let key = &after[..end];
            if key.is_empty() {
                return Err(bad("a '.' must be followed by a key"));
            }
            steps.push(Step::Key(key.to_string()));
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let close = after.find(']').ok_or_else(|| bad("a '[' is not closed"))?;
            let inside = after[..close].trim();
            rest = &after[close + 1..];
            let quoted = inside
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .or_else(|| inside.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')));
            match quoted {
                Some(key) => steps.push(Step::Key(key.to_string())),
                None => steps.push(Step::Index(
                    inside
                        .parse()
                        .map_err(|_| bad("an index must be a non-negative integer"))?,
                )),
            }
        } else {
            return Err(bad("expected '.' or '['"));
        }
    }
    Ok(steps)
}

fn follow<'a>(mut value: &'a Value, steps: &[Step]) -> Option<&'a Value> {
    for step in steps {
        value = match (step, value) {
            (Step::Key(k), Value::Object(map)) => map.get(k)?,
            (Step::Index(i), Value::Array(items)) => items.get(*i)?,
            _ => return None,
        };
    }
    Some(value)
}

/// Applies `f` to each row's JSON value at its path (parsed once while it repeats).
fn at_path<T>(
    function: &str,
    args: &[ArrayRef],
    f: impl Fn(&Value) -> Option<T>,
) -> Result<Vec<Option<T>>> {
    let (docs, paths) = (strings(&args[0])?, strings(&args[1])?);
    let mut last: Option<(String, Vec<Step>)> = None;
    let mut out = Vec::with_capacity(docs.len());
    for (doc, path) in docs.iter().zip(paths.iter()) {
        let (Some(doc), Some(path)) = (doc, path) else {
            out.push(None);
            continue;
        };
        if last.as_ref().is_none_or(|(p, _)| p != path) {
            last = Some((path.to_string(), parse_path(function, path)?));
        }
        let steps = last.as_ref().map(|(_, s)| s.as_slice()).unwrap_or_default();
        let value = serde_json::from_str::<Value>(doc).ok();
        out.push(value.as_ref().and_then(|v| follow(v, steps)).and_then(&f));
    }
    Ok(out)
}

fn json_extract(args: &[ArrayRef], _: &DataType) -> Result<ArrayRef> {
    let out = at_path("json_extract", args, |v| Some(v.to_string()))?;
    Ok(Arc::new(StringArray::from(out)))
}

fn json_extract_scalar(args: &[ArrayRef], _: &DataType) -> Result<ArrayRef> {
    let out = at_path("json_extract_scalar", args, |v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    })?;
    Ok(Arc::new(StringArray::from(out)))
}

fn json_size(args: &[ArrayRef], _: &DataType) -> Result<ArrayRef> {
    let out = at_path("json_size", args, |v| {
        Some(match v {
            Value::Array(items) => items.len() as i64,
            Value::Object(map) => map.len() as i64,
            _ => 0,
        })
    })?;
    Ok(Arc::new(Int64Array::from(out)))
}

fn each_doc<T>(args: &[ArrayRef], f: impl Fn(&str) -> Result<Option<T>>) -> Result<Vec<Option<T>>> {
    strings(&args[0])?
        .iter()
        .map(|doc| doc.map_or(Ok(None), &f))
        .collect()
}

fn json_array_length(args: &[ArrayRef], _: &DataType) -> Result<ArrayRef> {
    let out = each_doc(args, |doc| {
        Ok(match serde_json::from_str::<Value>(doc) {
            Ok(Value::Array(items)) => Some(items.len() as i64),
            _ => None,
        })
    })?;
    Ok(Arc::new(Int64Array::from(out)))
}

fn json_format(args: &[ArrayRef], _: &DataType) -> Result<ArrayRef> {
    let out = each_doc(args, |doc| {
        Ok(serde_json::from_str::<Value>(doc)
            .ok()
            .map(|v| v.to_string()))
    })?;
    Ok(Arc::new(StringArray::from(out)))
}

fn json_parse(args: &[ArrayRef], _: &DataType) -> Result<ArrayRef> {
    let out = each_doc(args, |doc| {
        serde_json::from_str::<Value>(doc)
            .map(|v| Some(v.to_string()))
            .map_err(|e| {
                let shown: String = doc.chars().take(60).collect();
                DataFusionError::Execution(format!("json_parse: '{shown}' is not valid JSON: {e}"))
            })
    })?;
    Ok(Arc::new(StringArray::from(out)))
}

fn is_json_scalar(args: &[ArrayRef], _: &DataType) -> Result<ArrayRef> {
    let out = each_doc(args, |doc| {
        Ok(serde_json::from_str::<Value>(doc)
            .ok()
            .map(|v| !matches!(v, Value::Array(_) | Value::Object(_))))
    })?;
    Ok(Arc::new(BooleanArray::from(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_keys_quotes_and_indexes() {
        assert_eq!(
            parse_path("f", "$.a[\"b c\"][2]['d']").unwrap(),
            vec![
                Step::Key("a".into()),
                Step::Key("b c".into()),
                Step::Index(2),
                Step::Key("d".into())
            ]
        );
        assert!(parse_path("f", "a.b").is_err());
        assert!(parse_path("f", "$[x]").is_err());
    }
}
