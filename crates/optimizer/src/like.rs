//! `LIKE '%a%b%'` as a search for each part in turn instead of a regular expression.
//!
//! Arrow evaluates a `LIKE` pattern that is an exact string, a prefix, a suffix or one
//! `%…%` substring with specialised kernels, and anything else with a regular
//! expression. A pattern of several substrings in order (`o_comment NOT LIKE
//! '%special%requests%'` in TPC-H Q13, `'%Customer%Complaints%'` in Q16, a log search
//! for `'%error%timeout%'`) is common, and the regular expression took 80 ns a row over
//! Q13's 15 million comments. Such a pattern holds when the first part occurs, the
//! second occurs after the first's earliest occurrence, and so on: taking each part's
//! earliest occurrence after the one before leaves the most room for the rest, so the
//! search never needs to go back. [`rewrite`] makes every case-sensitive `LIKE` whose
//! pattern is a literal starting and ending with `%`, with two or more parts and no `_`
//! or escape character, a call to [`LikeParts`], which finds the parts with
//! `memchr::memmem` (vectorised). Null strings give null, as `LIKE` does; `NOT LIKE`
//! becomes `NOT` of the call. Anything else keeps Arrow's kernel.
//!
//! The rewrite happens after optimisation, when the physical plan is made, like the
//! decimal one, so the optimiser's rules see the `LIKE` as written.
//! `--datafusion-config tarn.like_parts=false` turns it off.

use std::sync::Arc;

use arrow::array::{Array, ArrayAccessor, ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue, internal_err};
use datafusion::logical_expr::expr::{Like, ScalarFunction};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    ColumnarValue, Expr, Filter, LogicalPlan, Projection, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use memchr::memmem::Finder;

/// `plan` with the `LIKE`s of its filters and projections that search for several parts
/// in order computed by [`LikeParts`].
pub(super) fn rewrite(plan: LogicalPlan) -> Result<LogicalPlan> {
    Ok(plan.transform_up_with_subqueries(rewrite_node)?.data)
}

fn rewrite_node(node: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    match node {
        LogicalPlan::Filter(f) => {
            let t = f.predicate.clone().transform_up(rewrite_expr)?;
            if !t.transformed {
                return Ok(Transformed::no(LogicalPlan::Filter(f)));
            }
            Ok(Transformed::yes(LogicalPlan::Filter(Filter::try_new(
                t.data, f.input,
            )?)))
        }
        LogicalPlan::Projection(p) => {
            let preserver = NamePreserver::new_for_projection();
            let mut changed = false;
            let exprs = p
                .expr
                .iter()
                .map(|e| {
                    let saved = preserver.save(e);
                    let t = e.clone().transform_up(rewrite_expr)?;
                    changed |= t.transformed;
                    Ok(saved.restore(t.data))
                })
                .collect::<Result<Vec<_>>>()?;
            if !changed {
                return Ok(Transformed::no(LogicalPlan::Projection(p)));
            }
            Ok(Transformed::yes(LogicalPlan::Projection(
                Projection::try_new_with_schema(exprs, p.input, p.schema)?,
            )))
        }
        other => Ok(Transformed::no(other)),
    }
}

/// The parts of a pattern `%a%b%…%` of two or more parts with no `_` or `\`.
fn parts(pattern: &str) -> Option<Vec<String>> {
    if pattern.len() < 2
        || !pattern.starts_with('%')
        || !pattern.ends_with('%')
        || pattern.contains(['_', '\\'])
    {
        return None;
    }
    let parts: Vec<String> = pattern
        .split('%')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    (parts.len() >= 2).then_some(parts)
}

fn rewrite_expr(expr: Expr) -> Result<Transformed<Expr>> {
    let Expr::Like(Like {
        negated,
        expr: value,
        pattern,
        escape_char: None,
        case_insensitive: false,
    }) = &expr
    else {
        return Ok(Transformed::no(expr));
    };
    let Expr::Literal(
        ScalarValue::Utf8(Some(p))
        | ScalarValue::Utf8View(Some(p))
        | ScalarValue::LargeUtf8(Some(p)),
        _,
    ) = pattern.as_ref()
    else {
        return Ok(Transformed::no(expr));
    };
    let Some(parts) = parts(p) else {
        return Ok(Transformed::no(expr));
    };
    let udf = ScalarUDF::new_from_impl(LikeParts {
        parts,
        signature: Signature::any(2, Volatility::Immutable),
    });
    let call = Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(udf),
        vec![value.as_ref().clone(), pattern.as_ref().clone()],
    ));
    Ok(Transformed::yes(if *negated {
        Expr::Not(Box::new(call))
    } else {
        call
    }))
}

/// `value LIKE pattern` for a pattern of parts in order (the second argument, shown in
/// plans, is the pattern as written).
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct LikeParts {
    pub(crate) parts: Vec<String>,
    pub(crate) signature: Signature,
}

impl ScalarUDFImpl for LikeParts {
    fn name(&self) -> &str {
        "like_parts"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let nullable = args.arg_fields.iter().any(|f| f.is_nullable());
        Ok(Arc::new(Field::new(
            self.name(),
            DataType::Boolean,
            nullable,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(value) = args.args.first() else {
            return internal_err!("like_parts takes a string and a pattern");
        };
        // A worker's copy of the function, found by name, reads its parts from the
        // pattern (the second argument).
        let from_pattern;
        let parts = if self.parts.is_empty() {
            from_pattern = match args.args.get(1) {
                Some(ColumnarValue::Scalar(
                    ScalarValue::Utf8(Some(p))
                    | ScalarValue::Utf8View(Some(p))
                    | ScalarValue::LargeUtf8(Some(p)),
                )) => parts(p),
                _ => None,
            };
            match &from_pattern {
                Some(parts) => parts,
                None => return internal_err!("like_parts takes a pattern of parts"),
            }
        } else {
            &self.parts
        };
        let finders: Vec<Finder> = parts.iter().map(Finder::new).collect();
        let matches = |haystack: &[u8]| {
            let mut at = 0;
            for finder in &finders {
                match finder.find(&haystack[at..]) {
                    Some(i) => at += i + finder.needle().len(),
                    None => return false,
                }
            }
            true
        };
        let array = match value {
            ColumnarValue::Array(a) => Arc::clone(a),
            ColumnarValue::Scalar(s) => s.to_array()?,
        };
        let result = evaluate(&array, matches)?;
        match value {
            ColumnarValue::Scalar(_) => Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &result, 0,
            )?)),
            ColumnarValue::Array(_) => Ok(ColumnarValue::Array(result)),
        }
    }
}

/// `matches` of every string of `array`, null where the string is.
fn evaluate(array: &ArrayRef, matches: impl Fn(&[u8]) -> bool) -> Result<ArrayRef> {
    fn each<'a>(
        strings: impl ArrayAccessor<Item = &'a str>,
        matches: impl Fn(&[u8]) -> bool,
    ) -> BooleanBuffer {
        let mut bits = BooleanBufferBuilder::new(strings.len());
        for i in 0..strings.len() {
            bits.append(matches(strings.value(i).as_bytes()));
        }
        bits.finish()
    }
    let bits = match array.data_type() {
        DataType::Utf8View => each(array.as_string_view(), matches),
        DataType::Utf8 => each(array.as_string::<i32>(), matches),
        DataType::LargeUtf8 => each(array.as_string::<i64>(), matches),
        DataType::Null => {
            return Ok(arrow::array::new_null_array(
                &DataType::Boolean,
                array.len(),
            ));
        }
        other => return internal_err!("like_parts reads strings, not {other}"),
    };
    Ok(Arc::new(BooleanArray::new(bits, array.nulls().cloned())))
}

#[cfg(test)]
mod tests {
    // A test fails by panicking: each `expect` names the step that failed (building a
    // fixture, planning, running). None of this is compiled outside tests.
    use super::*;
    use crate::testing::{optimized, session};
    use arrow::array::{RecordBatch, StringArray, StringViewArray};
    use arrow::datatypes::Schema;
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    /// Strings that each pattern below matches, misses, or nearly matches (parts out of
    /// order, overlapping, repeated), and nulls, in a `Utf8` and a `Utf8View` column.
    fn context() -> SessionContext {
        let ctx = session();
        let words = [
            "special requests",
            "requests special",
            "special-requests after",
            "specialrequests",
            "a special request",
            "specia lrequests",
            "aba",
            "ab ba",
            "xx ab ba ab yy",
            "",
            "Special Requests",
            "special requests special requests",
            "é special ü requests ß",
        ];
        let values: Vec<Option<String>> = (0..200)
            .map(|i| (i % 7 != 3).then(|| words[i % words.len()].to_string()))
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("v", DataType::Utf8View, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(values.clone())),
                Arc::new(StringViewArray::from(values)),
            ],
        )
        .expect("batch");
        let table = MemTable::try_new(schema, vec![vec![batch]]).expect("table");
        ctx.register_table("t", Arc::new(table)).expect("register");
        ctx
    }

    /// The rows of `sql` optimized and run as written, and with the rewrite; and whether
    /// the rewrite changed the plan.
    async fn both(ctx: &SessionContext, sql: &str) -> (Vec<RecordBatch>, Vec<RecordBatch>, bool) {
        let plan = optimized(ctx, sql).await;
        let rewritten = rewrite(plan.clone()).expect("rewrite");
        let mut called = false;
        rewritten
            .apply_with_subqueries(|n| {
                n.apply_expressions(|e| {
                    e.apply(|e| {
                        called |= matches!(e, Expr::ScalarFunction(f) if f.name() == "like_parts");
                        Ok(TreeNodeRecursion::Continue)
                    })
                })
            })
            .expect("walk");
        let run = |plan: LogicalPlan| async {
            ctx.execute_logical_plan(plan)
                .await
                .expect("plan")
                .collect()
                .await
                .expect("run")
        };
        (run(plan).await, run(rewritten).await, called)
    }

    #[tokio::test]
    async fn parts_in_order_answer_as_like_does() {
        let ctx = context();
        for pattern in [
            "%special%requests%",
            "%ab%ba%",
            "%a%b%a%",
            "%%special%%requests%",
            "%é%ü%ß%",
            "%requests%special%",
        ] {
            for column in ["s", "v"] {
                for not in ["", "NOT "] {
                    let sql = format!(
                        "SELECT {column}, {column} {not}LIKE '{pattern}' AS m FROM t \
                         WHERE {column} {not}LIKE '{pattern}' OR {column} IS NULL \
                         OR length({column}) < 4"
                    );
                    let (expected, got, called) = both(&ctx, &sql).await;
                    assert!(called, "rewritten: {sql}");
                    assert_eq!(expected, got, "{sql}");
                    let rows: usize = got.iter().map(RecordBatch::num_rows).sum();
                    assert!(rows > 10, "{sql}: {rows} rows");
                }
            }
        }
    }

    #[tokio::test]
    async fn other_patterns_keep_arrow_s_kernel() {
        let ctx = context();
        for sql in [
            "SELECT s FROM t WHERE s LIKE '%special%'",
            "SELECT s FROM t WHERE s LIKE 'special%requests%'",
            "SELECT s FROM t WHERE s LIKE '%special_requests%'",
            "SELECT s FROM t WHERE s ILIKE '%special%requests%'",
            "SELECT s FROM t WHERE s LIKE '%special\\%%requests%' ESCAPE '\\'",
            "SELECT s FROM t WHERE s LIKE '%special\\%requests%'",
        ] {
            let (expected, got, called) = both(&ctx, sql).await;
            assert!(!called, "left alone: {sql}");
            assert_eq!(expected, got, "{sql}");
        }
    }
}
