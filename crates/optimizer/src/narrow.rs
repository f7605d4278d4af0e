//! A filter's conditions evaluated on the rows the conditions before them kept, with no
//! scatter back to the batch's length in between.
//!
//! DataFusion evaluates `a AND b AND c` as `(a AND b) AND c`. Once the left side keeps at
//! most a fifth of a batch's rows, it copies those rows of every column, evaluates the
//! right side on them, and scatters the result back to a mask as long as the batch, bit
//! by bit. The next `AND` then copies the rows again from the full batch. In TPC-H Q6
//! (five conditions on `lineitem`, keeping 2% of 60M rows) the scatters and copies took a
//! fifth of the query's time.
//!
//! This rule runs after DataFusion's physical optimizer (and after
//! [`super::filterorder`], which puts the most selective conditions first). It gives each
//! filter with two or more conditions a [`NarrowingConjunction`] predicate: it evaluates
//! the first condition on the batch, then, while conditions remain, copies only the
//! columns the remaining conditions read, only for the rows kept so far, once those are
//! at most [`NARROW_BELOW`] of the rows in hand, and evaluates the next condition there.
//! The rows' positions travel with them, so the mask is built once, at the end.
//!
//! A condition is evaluated on a subset of the rows DataFusion would evaluate it on (the
//! rows are also narrowed wherever DataFusion would evaluate on the kept rows only), so
//! no new error can arise. A row kept is one where every condition is true; a null
//! counts as false, as it does in a filter (this predicate is only a filter's).
//! `--datafusion-config tarn.narrow_filter_conditions=false` turns the rule off.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, RecordBatchOptions};
use arrow::buffer::{BooleanBuffer, MutableBuffer};
use arrow::compute::{FilterBuilder, prep_null_mask_filter};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, UInt32Type};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, exec_datafusion_err};
use datafusion::logical_expr::ColumnarValue;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, Column};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr::{PhysicalExpr, split_conjunction};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};

use super::TarnOptions;

/// The rows in hand are narrowed to those kept so far once these are at most this share.
/// Above it, the next condition is evaluated on all of them and the results combined.
const NARROW_BELOW: f64 = 0.25;

/// DataFusion's `AND` evaluates its right side only on the rows its left keeps once they
/// are at most this share of the batch (its `PRE_SELECTION_THRESHOLD`).
const DATAFUSION_PRESELECTS_BELOW: f64 = 0.2;

/// Whether `count` is at most `share` of `of`.
fn share_below(count: usize, of: usize, share: f64) -> bool {
    count as f64 <= share * of as f64
}

/// The rule; see the module documentation.
#[derive(Debug, Default)]
pub struct NarrowFilterConditions;

impl PhysicalOptimizerRule for NarrowFilterConditions {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !TarnOptions::get(config, |o| o.narrow_filter_conditions) {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            let Some(filter) = node.downcast_ref::<FilterExec>() else {
                return Ok(Transformed::no(node));
            };
            if filter.predicate().is::<NarrowingConjunction>() {
                return Ok(Transformed::no(node));
            }
            let conditions: Vec<Arc<dyn PhysicalExpr>> = split_conjunction(filter.predicate())
                .into_iter()
                .map(Arc::clone)
                .collect();
            if conditions.len() < 2 {
                return Ok(Transformed::no(node));
            }
            let predicate = NarrowingConjunction::try_new(conditions)?;
            let rebuilt = FilterExecBuilder::from(filter)
                .with_predicate(Arc::new(predicate))
                .build()?;
            Ok(Transformed::yes(Arc::new(rebuilt) as _))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "tarn_narrow_filter_conditions"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `c1 AND c2 AND …` as a filter's predicate, evaluated as the module documentation
/// describes. Its children are the conditions, over the filter's input.
#[derive(Debug)]
pub struct NarrowingConjunction {
    /// The conditions in the order evaluated, over the filter's input schema.
    conditions: Vec<Arc<dyn PhysicalExpr>>,
    /// The input's columns that the conditions after the first read, ascending.
    projection: Vec<usize>,
    /// The conditions after the first, over those columns.
    narrowed: Vec<Arc<dyn PhysicalExpr>>,
    /// For each condition, whether it may fail on rows the ones before it did not keep
    /// (see [`super::guard`]): such a condition is always evaluated on the kept rows only.
    guarded: Vec<bool>,
}

impl NarrowingConjunction {
    /// The conjunction of `conditions` (two or more).
    pub fn try_new(conditions: Vec<Arc<dyn PhysicalExpr>>) -> Result<Self> {
        let guarded = vec![false; conditions.len()];
        Self::try_new_guarded(conditions, guarded)
    }

    /// The conjunction of `conditions`, each one `guarded` evaluated only on the rows the
    /// ones before it kept.
    pub fn try_new_guarded(
        conditions: Vec<Arc<dyn PhysicalExpr>>,
        guarded: Vec<bool>,
    ) -> Result<Self> {
        let mut projection: Vec<usize> = conditions
            .iter()
            .skip(1)
            .flat_map(|c| collect_columns(c).into_iter().map(|column| column.index()))
            .collect();
        projection.sort_unstable();
        projection.dedup();
        let narrowed = conditions
            .iter()
            .skip(1)
            .map(|condition| {
                Arc::clone(condition)
                    .transform(|e| {
                        let Some(column) = e.downcast_ref::<Column>() else {
                            return Ok(Transformed::no(e));
                        };
                        let at = projection
                            .binary_search(&column.index())
                            .map_err(|_| exec_datafusion_err!("column {column} not projected"))?;
                        Ok(Transformed::yes(
                            Arc::new(Column::new(column.name(), at)) as _
                        ))
                    })
                    .map(|t| t.data)
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            conditions,
            projection,
            narrowed,
            guarded,
        })
    }

    /// The conditions, in the order evaluated.
    pub fn conditions(&self) -> &[Arc<dyn PhysicalExpr>] {
        &self.conditions
    }
}

/// The rows where `value` is true, as a mask without nulls.
fn kept(value: ColumnarValue, rows: usize) -> Result<BooleanArray> {
    let array = value.into_array(rows)?;
    let mask = array
        .as_boolean_opt()
        .ok_or_else(|| exec_datafusion_err!("filter condition is not boolean"))?;
    Ok(match mask.null_count() {
        0 => mask.clone(),
        _ => prep_null_mask_filter(mask),
    })
}

impl PhysicalExpr for NarrowingConjunction {
    fn return_field(&self, _input_schema: &Schema) -> Result<FieldRef> {
        Ok(Arc::new(Field::new("predicate", DataType::Boolean, false)))
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let rows = batch.num_rows();
        let mut mask = kept(self.conditions[0].evaluate(batch)?, rows)?;
        // The rows in hand: the projected columns, and their positions in `batch` once
        // narrowed (`None`: all of `batch`'s rows, in order). `mask` is over these rows.
        let mut columns: Vec<ArrayRef> = self
            .projection
            .iter()
            .map(|i| Arc::clone(batch.column(*i)))
            .collect();
        let mut positions: Option<ArrayRef> = None;
        let schema: SchemaRef = Arc::new(batch.schema().project(&self.projection)?);
        for (k, condition) in self.narrowed.iter().enumerate() {
            let guarded = self.guarded.get(k + 1).copied().unwrap_or(false);
            let in_hand = mask.len();
            let count = mask.true_count();
            if count == 0 {
                break;
            }
            // Also narrowed where DataFusion would evaluate the next condition on the
            // kept rows only, so no condition sees a row DataFusion's would not.
            if count < in_hand
                && (guarded
                    || share_below(count, in_hand, NARROW_BELOW)
                    || share_below(count, rows, DATAFUSION_PRESELECTS_BELOW))
            {
                let filter = FilterBuilder::new(&mask).optimize().build();
                columns = columns
                    .iter()
                    .map(|c| filter.filter(c))
                    .collect::<std::result::Result<_, _>>()?;
                positions = Some(match positions {
                    Some(p) => filter.filter(&p)?,
                    None => Arc::new(arrow::array::UInt32Array::from_iter_values(
                        mask.values().set_indices().map(|i| i as u32),
                    )),
                });
                mask = BooleanArray::new(BooleanBuffer::new_set(count), None);
            }
            let narrowed = RecordBatch::try_new_with_options(
                Arc::clone(&schema),
                columns.clone(),
                &RecordBatchOptions::new().with_row_count(Some(mask.len())),
            )?;
            let next = kept(condition.evaluate(&narrowed)?, mask.len())?;
            mask = arrow::compute::and(&mask, &next)?;
        }
        let Some(positions) = positions else {
            return Ok(ColumnarValue::Array(Arc::new(mask)));
        };
        // Back to a mask over `batch`: a bit for each position still kept. `mask` and
        // `positions` are both over the rows in hand (one position per row), and every
        // position is a row of `batch`, so neither index can be out of bounds.
        let mut bits = MutableBuffer::new_null(rows);
        let slice = bits.as_slice_mut();
        let positions = positions.as_primitive::<UInt32Type>().values();
        for kept in mask.values().set_indices() {
            arrow::util::bit_util::set_bit(slice, positions[kept] as usize);
        }
        let buffer = BooleanBuffer::new(bits.into(), 0, rows);
        Ok(ColumnarValue::Array(Arc::new(BooleanArray::new(
            buffer, None,
        ))))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        self.conditions.iter().collect()
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let guarded = self.guarded.clone();
        Ok(Arc::new(Self::try_new_guarded(children, guarded)?))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, |condition, f| condition.fmt_sql(f))
    }
}

impl NarrowingConjunction {
    /// The conditions joined by `AND`, each written by `write`, an `OR` in parentheses:
    /// how DataFusion writes the predicate this one replaces.
    fn write(
        &self,
        f: &mut fmt::Formatter<'_>,
        write: impl Fn(&Arc<dyn PhysicalExpr>, &mut fmt::Formatter<'_>) -> fmt::Result,
    ) -> fmt::Result {
        for (i, condition) in self.conditions.iter().enumerate() {
            if i > 0 {
                f.write_str(" AND ")?;
            }
            let or = condition
                .downcast_ref::<BinaryExpr>()
                .is_some_and(|b| b.op() == &Operator::Or);
            if or {
                f.write_str("(")?;
            }
            write(condition, f)?;
            if or {
                f.write_str(")")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for NarrowingConjunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, |condition, f| write!(f, "{condition}"))
    }
}

impl PartialEq for NarrowingConjunction {
    fn eq(&self, other: &Self) -> bool {
        self.conditions == other.conditions
    }
}

impl Eq for NarrowingConjunction {}

impl Hash for NarrowingConjunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.conditions.hash(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use datafusion::physical_expr::conjunction;
    use datafusion::physical_expr::expressions::{binary, col, lit};
    use datafusion::physical_plan::{collect, displayable};
    use datafusion::prelude::SessionContext;

    /// 4096 rows: `a` 0..1000 with every 7th null, `b` 0..100, `s` one of five words.
    fn batch() -> RecordBatch {
        let mut seed = 17u64;
        let mut next = move |m: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        let words = ["ash", "birch", "cedar", "elm", "fir"];
        let rows = 4096;
        let a: Int64Array = (0..rows)
            .map(|i| (i % 7 != 3).then(|| next(1000) as i64))
            .collect();
        let b: Int64Array = (0..rows).map(|_| Some(next(100) as i64)).collect();
        let s: StringArray = (0..rows).map(|_| Some(words[next(5) as usize])).collect();
        let schema = Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(a), Arc::new(b), Arc::new(s)],
        )
        .expect("batch")
    }

    fn mask(value: ColumnarValue, rows: usize) -> BooleanArray {
        kept(value, rows).expect("mask")
    }

    #[test]
    fn keeps_the_rows_datafusions_and_keeps_at_every_selectivity() {
        let batch = batch();
        let schema = batch.schema();
        let c = |name: &str| col(name, &schema).expect("column");
        let cmp = |l, op, r| binary(l, op, r, &schema).expect("comparison");
        let rows = batch.num_rows();
        // The first condition keeps from none to all of the rows.
        for bound in [0i64, 1, 10, 50, 200, 250, 500, 999, 1000] {
            let conditions = [
                cmp(c("a"), Operator::Lt, lit(bound)),
                cmp(c("b"), Operator::GtEq, lit(20i64)),
                cmp(
                    cmp(c("s"), Operator::Eq, lit("elm")),
                    Operator::Or,
                    cmp(c("b"), Operator::Lt, lit(30i64)),
                ),
                cmp(c("a"), Operator::NotEq, c("b")),
                cmp(c("s"), Operator::NotEq, lit("fir")),
            ];
            // Each prefix of two or more conditions, so the last one varies too.
            for n in 2..=conditions.len() {
                let conditions = conditions[..n].to_vec();
                let and = conjunction(conditions.iter().cloned());
                let expected = mask(and.evaluate(&batch).expect("and"), rows);
                let narrowing = NarrowingConjunction::try_new(conditions).expect("conjunction");
                let got = narrowing.evaluate(&batch).expect("narrowing");
                let got = match got {
                    ColumnarValue::Array(a) => a.as_boolean().clone(),
                    ColumnarValue::Scalar(s) => panic!("scalar {s}"),
                };
                assert_eq!(got.null_count(), 0);
                assert_eq!(got, expected, "a < {bound}, {n} conditions");
            }
        }
    }

    #[test]
    fn no_condition_sees_a_row_datafusions_and_would_not() {
        let batch = batch();
        let schema = batch.schema();
        let c = |name: &str| col(name, &schema).expect("column");
        let cmp = |l, op, r| binary(l, op, r, &schema).expect("comparison");
        // `b >= 90` keeps a tenth of the rows and `b <> 95` nine in ten of those, so
        // DataFusion evaluates the division only on the rows both keep: never by zero.
        let conditions = vec![
            cmp(c("b"), Operator::GtEq, lit(90i64)),
            cmp(c("b"), Operator::NotEq, lit(95i64)),
            cmp(
                cmp(
                    lit(1000i64),
                    Operator::Divide,
                    cmp(c("b"), Operator::Minus, lit(95i64)),
                ),
                Operator::Gt,
                lit(0i64),
            ),
        ];
        let rows = batch.num_rows();
        let and = conjunction(conditions.iter().cloned());
        let expected = mask(and.evaluate(&batch).expect("and"), rows);
        let narrowing = NarrowingConjunction::try_new(conditions).expect("conjunction");
        let got = mask(narrowing.evaluate(&batch).expect("narrowing"), rows);
        assert_eq!(got, expected);
        assert!(got.true_count() > 0);
    }

    #[test]
    fn conditions_after_the_first_read_only_their_columns() {
        let batch = batch();
        let schema = batch.schema();
        let c = |name: &str| col(name, &schema).expect("column");
        let conditions = vec![
            binary(c("s"), Operator::Eq, lit("elm"), &schema).expect("eq"),
            binary(c("b"), Operator::Lt, lit(5i64), &schema).expect("lt"),
        ];
        let narrowing = NarrowingConjunction::try_new(conditions).expect("conjunction");
        assert_eq!(narrowing.projection, vec![1]);
        let narrowed = narrowing.narrowed[0].to_string();
        assert_eq!(narrowed, "b@0 < 5");
        assert_eq!(narrowing.to_string(), "s@2 = elm AND b@1 < 5");
    }

    async fn run(narrow: bool, sql: &str) -> (Vec<RecordBatch>, bool) {
        let state = crate::test_state(2, |o| o.narrow_filter_conditions = narrow).build();
        let ctx = SessionContext::new_with_state(state);
        let batch = batch();
        let halves = vec![vec![batch.slice(0, 2048)], vec![batch.slice(2048, 2048)]];
        let table =
            datafusion::datasource::MemTable::try_new(batch.schema(), halves).expect("table");
        ctx.register_table("t", Arc::new(table)).expect("register");
        let plan = ctx
            .sql(sql)
            .await
            .expect("sql")
            .create_physical_plan()
            .await
            .expect("plan");
        let mut narrowing = false;
        plan.apply(|node| {
            if let Some(filter) = node.downcast_ref::<FilterExec>() {
                narrowing |= filter.predicate().is::<NarrowingConjunction>();
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })
        .expect("walk");
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        assert!(shown.contains("FilterExec: a@0 < 100 AND"), "{shown}");
        let batches = collect(plan, ctx.task_ctx()).await.expect("run");
        (batches, narrowing)
    }

    #[tokio::test]
    async fn filters_answer_the_same_with_and_without_the_rule() {
        let sql = "SELECT s, count(*), sum(a), sum(b) FROM t \
                   WHERE a < 100 AND b >= 20 AND (s = 'elm' OR b < 30) AND s <> 'fir' \
                   GROUP BY s ORDER BY s";
        let (on, narrowed) = run(true, sql).await;
        let (off, plain) = run(false, sql).await;
        assert!(narrowed && !plain);
        assert_eq!(on, off);
        let counted: i64 = on
            .iter()
            .map(|b| arrow::compute::sum(b.column(1).as_primitive::<arrow::datatypes::Int64Type>()))
            .map(Option::unwrap_or_default)
            .sum();
        assert!(counted > 0);
    }
}
