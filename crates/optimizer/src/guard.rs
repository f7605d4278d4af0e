//! A guard written in a filter or a join condition protects what it guards:
//! `WHERE x <> 0 AND 8 % x = 0` and `WHERE x = 0 OR 8 % x = 0` answer instead of failing
//! with "Divide by zero".
//!
//! DataFusion evaluates both sides of `AND` and `OR` on every row of a batch (it narrows
//! `AND`'s right side to the rows its left keeps only when they are at most a fifth), so a
//! condition that fails on some values (a division, a cast of text, an overflow) fails on
//! rows its guard was written to keep away. This rule, the last of Tarn's physical
//! optimizer, makes every filter's (including `HAVING`'s), aggregate `FILTER (WHERE …)`'s
//! and join condition's logic lazy where it matters:
//!
//! - a filter's conditions that cannot fail go before those that can (written order kept
//!   within each kind: moving a condition that cannot fail earlier never makes an error);
//! - a condition that can fail is evaluated only on the rows the conditions before it
//!   kept (in Tarn's narrowing conjunction, see [`super::narrow`], or a [`LazyLogic`]);
//! - inside a condition, `a AND b` evaluates `b` only where `a` is not false, and `a OR b`
//!   only where `a` is not true, when `b` can fail ([`LazyLogic`]). SQL's three-valued
//!   answer is unchanged: the rows skipped are those whose answer `a` alone decides.
//!
//! In select lists, each `CASE WHEN` condition gets the same lazy logic (it decides which
//! rows its branch takes, as a filter does); other `AND`s there are a value of every row,
//! evaluated on all rows as in DuckDB.
//! Whether an expression can fail is judged conservatively ([`can_fail`]): anything not
//! known to be safe is taken to be able to fail, which costs only narrowing.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::kernels::boolean::{and_kleene, or_kleene};
use arrow::datatypes::{DataType, FieldRef, Schema};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue, exec_datafusion_err};
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::expressions::{
    BinaryExpr, CaseExpr, CastExpr, Column, InListExpr, IsNotNullExpr, IsNullExpr, LikeExpr,
    Literal, NotExpr, TryCastExpr,
};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr, split_conjunction};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::joins::utils::JoinFilter;
use datafusion::physical_plan::joins::{HashJoinExec, NestedLoopJoinExec};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};

use super::narrow::NarrowingConjunction;

/// The rule; see the module documentation.
#[derive(Debug, Default)]
pub struct GuardConditions;

impl PhysicalOptimizerRule for GuardConditions {
    fn name(&self) -> &str {
        "tarn_guard_conditions"
    }

    fn schema_check(&self) -> bool {
        true
    }

    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if let Some(filter) = node.downcast_ref::<FilterExec>() {
                let schema = filter.input().schema();
                return Ok(match guarded_predicate(filter.predicate(), &schema)? {
                    Some(predicate) => Transformed::yes(Arc::new(
                        FilterExecBuilder::from(filter)
                            .with_predicate(predicate)
                            .build()?,
                    ) as _),
                    None => Transformed::no(node),
                });
            }
            if let Some(aggregate) = node.downcast_ref::<AggregateExec>()
                && let Some(guarded) = guarded_aggregate(aggregate)?
            {
                return Ok(Transformed::yes(Arc::new(guarded) as _));
            }
            if let Some(join) = node.downcast_ref::<HashJoinExec>()
                && let Some(filter) = guarded_join_filter(join.filter())?
            {
                return Ok(Transformed::yes(Arc::new(
                    join.builder().with_filter(Some(filter)).build()?,
                ) as _));
            }
            if let Some(join) = node.downcast_ref::<NestedLoopJoinExec>()
                && let Some(filter) = guarded_join_filter(join.filter())?
            {
                let builder =
                    datafusion::physical_plan::joins::NestedLoopJoinExecBuilder::from(join);
                return Ok(Transformed::yes(
                    Arc::new(builder.with_filter(Some(filter)).build()?) as _,
                ));
            }
            Ok(Transformed::no(node))
        })
        .map(|t| t.data)
    }
}

/// `aggregate` with its `FILTER (WHERE …)` conditions guarded like a filter's, or `None`
/// when none needs it.
fn guarded_aggregate(aggregate: &AggregateExec) -> Result<Option<AggregateExec>> {
    let schema = aggregate.input().schema();
    let mut changed = false;
    let mut filters = Vec::with_capacity(aggregate.filter_expr().len());
    for filter in aggregate.filter_expr() {
        match filter {
            Some(f) => match guarded_predicate(f, &schema)? {
                Some(guarded) => {
                    changed = true;
                    filters.push(Some(guarded));
                }
                None => filters.push(Some(Arc::clone(f))),
            },
            None => filters.push(None),
        }
    }
    if !changed {
        return Ok(None);
    }
    Ok(Some(
        AggregateExec::try_new(
            *aggregate.mode(),
            aggregate.group_expr().clone(),
            aggregate.aggr_expr().to_vec(),
            filters,
            Arc::clone(aggregate.input()),
            aggregate.input_schema(),
        )?
        .with_limit_options(aggregate.limit_options()),
    ))
}

/// The select lists' part of the guards: each `CASE WHEN` condition's logic made lazy. It
/// runs first among the physical rules, before DataFusion moves projections into scans.
#[derive(Debug, Default)]
pub struct GuardCaseConditions;

impl PhysicalOptimizerRule for GuardCaseConditions {
    fn name(&self) -> &str {
        "tarn_guard_case_conditions"
    }

    fn schema_check(&self) -> bool {
        true
    }

    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(projection) = node.downcast_ref::<ProjectionExec>() else {
                return Ok(Transformed::no(node));
            };
            match lazy_case_conditions(projection)? {
                Some(exprs) => Ok(Transformed::yes(Arc::new(ProjectionExec::try_new(
                    exprs,
                    Arc::clone(projection.input()),
                )?) as _)),
                None => Ok(Transformed::no(node)),
            }
        })
        .map(|t| t.data)
    }
}

/// A projection's expressions with the logic of each `CASE WHEN` condition made lazy (a
/// condition is a filter of the rows its branch takes, as in DuckDB), or `None` where
/// nothing changes.
fn lazy_case_conditions(projection: &ProjectionExec) -> Result<Option<Vec<ProjectionExpr>>> {
    let schema = projection.input().schema();
    let mut changed = false;
    let mut exprs = Vec::with_capacity(projection.expr().len());
    for p in projection.expr() {
        let rewritten = Arc::clone(&p.expr).transform_up(|e| {
            let Some(case) = e.downcast_ref::<CaseExpr>() else {
                return Ok(Transformed::no(e));
            };
            if !case
                .when_then_expr()
                .iter()
                .any(|(when, _)| can_fail(when, &schema))
            {
                return Ok(Transformed::no(e));
            }
            let when_then = case
                .when_then_expr()
                .iter()
                .map(|(when, then)| Ok((lazy_within(Arc::clone(when), &schema)?, Arc::clone(then))))
                .collect::<Result<Vec<_>>>()?;
            Ok(Transformed::yes(Arc::new(CaseExpr::try_new(
                case.expr().cloned(),
                when_then,
                case.else_expr().cloned(),
            )?) as _))
        })?;
        changed |= rewritten.transformed;
        exprs.push(ProjectionExpr {
            expr: rewritten.data,
            alias: p.alias.clone(),
        });
    }
    Ok(changed.then_some(exprs))
}

/// A join's condition with its logic made lazy, or `None` where nothing changes.
fn guarded_join_filter(filter: Option<&JoinFilter>) -> Result<Option<JoinFilter>> {
    let Some(filter) = filter else {
        return Ok(None);
    };
    Ok(
        guarded_predicate(filter.expression(), filter.schema())?.map(|expression| {
            JoinFilter::new(
                expression,
                filter.column_indices().to_vec(),
                Arc::clone(filter.schema()),
            )
        }),
    )
}

/// A filter's predicate (a conjunction of conditions over `schema`) guarded as the module
/// documentation says, or `None` where nothing changes.
fn guarded_predicate(
    predicate: &Arc<dyn PhysicalExpr>,
    schema: &Schema,
) -> Result<Option<Arc<dyn PhysicalExpr>>> {
    let (conditions, narrowing): (Vec<Arc<dyn PhysicalExpr>>, bool) =
        match predicate.downcast_ref::<NarrowingConjunction>() {
            Some(n) => (n.conditions().to_vec(), true),
            None => (
                split_conjunction(predicate).into_iter().cloned().collect(),
                false,
            ),
        };
    let fails = |c: &Arc<dyn PhysicalExpr>| can_fail(c, schema);
    if !conditions.iter().any(fails) {
        return Ok(None);
    }
    // Conditions that cannot fail first, each kind in the order it was in.
    let (safe, risky): (Vec<_>, Vec<_>) = conditions.into_iter().partition(|c| !fails(c));
    let ordered: Vec<Arc<dyn PhysicalExpr>> = safe
        .into_iter()
        .chain(risky)
        .map(|c| lazy_within(c, schema))
        .collect::<Result<_>>()?;
    if narrowing {
        let guarded = ordered.iter().map(fails).collect();
        return Ok(Some(Arc::new(NarrowingConjunction::try_new_guarded(
            ordered, guarded,
        )?)));
    }
    // A chain of `AND`s, each condition that can fail evaluated on the rows kept so far.
    let mut conditions = ordered.into_iter();
    let Some(mut chain) = conditions.next() else {
        return Ok(None);
    };
    for next in conditions {
        chain = if fails(&next) {
            Arc::new(LazyLogic::try_new(chain, Operator::And, next)?)
        } else {
            Arc::new(BinaryExpr::new(chain, Operator::And, next))
        };
    }
    Ok(Some(chain))
}

/// `condition` with each `AND` / `OR` whose right side can fail made a [`LazyLogic`].
fn lazy_within(condition: Arc<dyn PhysicalExpr>, schema: &Schema) -> Result<Arc<dyn PhysicalExpr>> {
    condition
        .transform_up(|e| {
            let Some(binary) = e.downcast_ref::<BinaryExpr>() else {
                return Ok(Transformed::no(e));
            };
            if !matches!(binary.op(), Operator::And | Operator::Or)
                || !can_fail(binary.right(), schema)
            {
                return Ok(Transformed::no(e));
            }
            Ok(Transformed::yes(Arc::new(LazyLogic::try_new(
                Arc::clone(binary.left()),
                *binary.op(),
                Arc::clone(binary.right()),
            )?) as _))
        })
        .map(|t| t.data)
}

/// Whether evaluating `expr` may fail on some rows' values. Conservative: only what is
/// known to be safe is safe (columns, constants, comparisons, `IS [NOT] NULL`, `NOT`,
/// `LIKE`, `IN` lists, widening casts, a few string and date functions, and logic over
/// these).
pub(crate) fn can_fail(expr: &Arc<dyn PhysicalExpr>, schema: &Schema) -> bool {
    let children_can_fail = || expr.children().into_iter().any(|c| can_fail(c, schema));
    if expr.is::<Column>() || expr.is::<Literal>() {
        return false;
    }
    if let Some(binary) = expr.downcast_ref::<BinaryExpr>() {
        use Operator::*;
        return match binary.op() {
            Eq | NotEq | Lt | LtEq | Gt | GtEq | And | Or | IsDistinctFrom | IsNotDistinctFrom
            | LikeMatch | ILikeMatch | NotLikeMatch | NotILikeMatch => children_can_fail(),
            _ => true,
        };
    }
    if let Some(cast) = expr.downcast_ref::<CastExpr>() {
        return children_can_fail()
            || cast
                .expr()
                .data_type(schema)
                .map_or(true, |from| cast_can_fail(&from, cast.cast_type()));
    }
    if expr.is::<LazyLogic>()
        || expr.is::<TryCastExpr>()
        || expr.is::<IsNullExpr>()
        || expr.is::<IsNotNullExpr>()
        || expr.is::<NotExpr>()
        || expr.is::<LikeExpr>()
        || expr.is::<InListExpr>()
        || expr.is::<CaseExpr>()
    {
        return children_can_fail();
    }
    if let Some(f) = expr.downcast_ref::<ScalarFunctionExpr>() {
        const SAFE: &[&str] = &[
            "coalesce",
            "nullif",
            "upper",
            "lower",
            "trim",
            "btrim",
            "ltrim",
            "rtrim",
            "length",
            "char_length",
            "character_length",
            "octet_length",
            "starts_with",
            "ends_with",
            "strpos",
            "date_trunc",
            "date_part",
            "isnan",
            "iszero",
        ];
        return !SAFE.contains(&f.name()) || children_can_fail();
    }
    true
}

/// Whether a cast from `from` to `to` can fail on some value (a parse, a narrowing).
fn cast_can_fail(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    let rank = |t: &DataType| match t {
        Int8 => Some((true, 1)),
        Int16 => Some((true, 2)),
        Int32 => Some((true, 4)),
        Int64 => Some((true, 8)),
        UInt8 => Some((false, 1)),
        UInt16 => Some((false, 2)),
        UInt32 => Some((false, 4)),
        UInt64 => Some((false, 8)),
        _ => None,
    };
    match (from, to) {
        (a, b) if a == b => false,
        (_, Utf8 | LargeUtf8 | Utf8View) => !matches!(from, Binary | LargeBinary | BinaryView),
        (Dictionary(_, value), _) => cast_can_fail(value, to),
        (_, Float64) => rank(from).is_none() && !matches!(from, Float16 | Float32 | Null),
        (Null, _) => false,
        (Date32, Date64 | Timestamp(_, _)) => false,
        _ => match (rank(from), rank(to)) {
            // A wider integer of the same sign, or a signed one wider than an unsigned.
            (Some((fs, fw)), Some((ts, tw))) => {
                !(tw > fw && (fs == ts || ts) || tw == fw && fs == ts)
            }
            _ => true,
        },
    }
}

/// `left AND right` or `left OR right` whose right side is evaluated only on the rows
/// whose answer the left side does not decide (`AND`: where it is not false; `OR`: where
/// it is not true), with SQL's three-valued result.
#[derive(Debug)]
pub struct LazyLogic {
    left: Arc<dyn PhysicalExpr>,
    op: Operator,
    right: Arc<dyn PhysicalExpr>,
    /// The input's columns `right` reads, ascending.
    projection: Vec<usize>,
    /// `right` over those columns.
    narrowed: Arc<dyn PhysicalExpr>,
}

impl LazyLogic {
    pub fn try_new(
        left: Arc<dyn PhysicalExpr>,
        op: Operator,
        right: Arc<dyn PhysicalExpr>,
    ) -> Result<Self> {
        let mut projection: Vec<usize> = collect_columns(&right)
            .into_iter()
            .map(|c| c.index())
            .collect();
        projection.sort_unstable();
        projection.dedup();
        let narrowed = Arc::clone(&right)
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
            })?
            .data;
        Ok(Self {
            left,
            op,
            right,
            projection,
            narrowed,
        })
    }

    /// Whether row `i` of the left side's answer leaves the result to the right side.
    fn undecided(&self, left: &BooleanArray, i: usize) -> bool {
        left.is_null(i) || (left.value(i) == (self.op == Operator::And))
    }

    fn combine(&self, left: &BooleanArray, right: &BooleanArray) -> Result<BooleanArray> {
        Ok(match self.op {
            Operator::And => and_kleene(left, right)?,
            _ => or_kleene(left, right)?,
        })
    }
}

impl PhysicalExpr for LazyLogic {
    fn return_field(&self, input_schema: &Schema) -> Result<FieldRef> {
        BinaryExpr::new(Arc::clone(&self.left), self.op, Arc::clone(&self.right))
            .return_field(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let rows = batch.num_rows();
        let left = self.left.evaluate(batch)?;
        let left = match left {
            ColumnarValue::Scalar(ScalarValue::Boolean(value)) => {
                let decided = value == Some(self.op == Operator::Or);
                if decided {
                    return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(value)));
                }
                ColumnarValue::Scalar(ScalarValue::Boolean(value)).into_array(rows)?
            }
            other => other.into_array(rows)?,
        };
        let left = left
            .as_boolean_opt()
            .ok_or_else(|| exec_datafusion_err!("{} is not a condition", self.left))?
            .clone();
        let needed: Vec<u32> = (0..rows)
            .filter(|&i| self.undecided(&left, i))
            .map(|i| i as u32)
            .collect();
        if needed.is_empty() {
            return Ok(ColumnarValue::Array(Arc::new(left)));
        }
        let right: ArrayRef = if needed.len() == rows {
            self.right.evaluate(batch)?.into_array(rows)?
        } else {
            // The right side over the undecided rows only, placed back at their rows (NULL
            // elsewhere: the left side's answer stands there whatever the right's).
            let positions = UInt32Array::from(needed.clone());
            let columns = self
                .projection
                .iter()
                .map(|&i| arrow::compute::take(batch.column(i), &positions, None))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let schema = Arc::new(batch.schema().project(&self.projection)?);
            let narrowed = RecordBatch::try_new_with_options(
                schema,
                columns,
                &arrow::array::RecordBatchOptions::new().with_row_count(Some(needed.len())),
            )?;
            let value = self
                .narrowed
                .evaluate(&narrowed)?
                .into_array(needed.len())?;
            let mut at: Vec<Option<u32>> = vec![None; rows];
            for (k, &i) in needed.iter().enumerate() {
                at[i as usize] = Some(k as u32);
            }
            arrow::compute::take(&value, &UInt32Array::from(at), None)?
        };
        let right = right
            .as_boolean_opt()
            .ok_or_else(|| exec_datafusion_err!("{} is not a condition", self.right))?;
        Ok(ColumnarValue::Array(Arc::new(self.combine(&left, right)?)))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.left, &self.right]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let [left, right] = children.as_slice() else {
            return Err(exec_datafusion_err!("LazyLogic takes two children"));
        };
        Ok(Arc::new(Self::try_new(
            Arc::clone(left),
            self.op,
            Arc::clone(right),
        )?))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.left.fmt_sql(f)?;
        write!(f, " {} ", self.op)?;
        self.right.fmt_sql(f)
    }
}

impl fmt::Display for LazyLogic {
    /// As DataFusion writes the `AND` / `OR` it replaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            BinaryExpr::new(Arc::clone(&self.left), self.op, Arc::clone(&self.right))
        )
    }
}

impl PartialEq for LazyLogic {
    fn eq(&self, other: &Self) -> bool {
        self.op == other.op && self.left.eq(&other.left) && self.right.eq(&other.right)
    }
}

impl Eq for LazyLogic {}

impl Hash for LazyLogic {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.op.hash(state);
        self.left.hash(state);
        self.right.hash(state);
    }
}

#[cfg(test)]
mod tests {
    // A test fails by panicking; none of this is compiled outside tests.
    use crate::testing::{session, sorted_values};
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;
    use std::sync::Arc;

    /// `g(x, y)`: x = 0, 1, 2, 3, 0, 7 (and NULL), y pairs them up; `h(y, z)`.
    async fn context(narrowing: bool) -> SessionContext {
        let ctx = session();
        if !narrowing {
            ctx.sql("SET tarn.narrow_filter_conditions = false")
                .await
                .expect("set");
        }
        let g = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Int64, true),
            Field::new("y", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&g),
            vec![
                Arc::new(Int64Array::from(vec![
                    Some(0),
                    Some(1),
                    Some(2),
                    Some(3),
                    Some(0),
                    Some(7),
                    None,
                ])),
                Arc::new(Int64Array::from(vec![1, 1, 2, 2, 3, 3, 3])),
            ],
        )
        .expect("g");
        ctx.register_table(
            "g",
            Arc::new(MemTable::try_new(g, vec![vec![batch]]).expect("table")),
        )
        .expect("register");
        let h = Arc::new(Schema::new(vec![
            Field::new("y", DataType::Int64, true),
            Field::new("z", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&h),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(Int64Array::from(vec![0, 2, 4])),
            ],
        )
        .expect("h");
        ctx.register_table(
            "h",
            Arc::new(MemTable::try_new(h, vec![vec![batch]]).expect("table")),
        )
        .expect("register");
        ctx
    }

    #[tokio::test]
    async fn guards_protect_the_conditions_they_guard() {
        for narrowing in [true, false] {
            let ctx = context(narrowing).await;
            let cases: &[(&str, Vec<&str>)] = &[
                // x in 1, 2 divide 8; x = 0 is kept away from the division.
                ("SELECT x FROM g WHERE x <> 0 AND 8 % x = 0", vec!["1", "2"]),
                (
                    "SELECT x FROM g WHERE x = 0 OR 8 % x = 0",
                    vec!["0", "0", "1", "2"],
                ),
                // The guard after the division: conditions that cannot fail go first.
                ("SELECT x FROM g WHERE 8 % x = 0 AND x <> 0", vec!["1", "2"]),
                (
                    "SELECT x FROM g WHERE y > 0 AND (x = 0 OR 8 % x = 0) AND x < 2",
                    vec!["0", "0", "1"],
                ),
                // HAVING.
                (
                    "SELECT x, count(*) FROM g GROUP BY x HAVING x = 0 OR 8 % x = 0",
                    vec!["0|2", "1|1", "2|1"],
                ),
                // A join condition over both sides.
                (
                    "SELECT g.x, h.z FROM g JOIN h ON g.y = h.y AND (h.z = 0 OR g.x % h.z = 0)",
                    vec!["0|0", "0|4", "1|0", "2|2"],
                ),
                // Nested: an OR inside an AND inside the filter.
                (
                    "SELECT x FROM g WHERE y < 3 AND (x = 0 OR (x > 1 AND 9 % x = 0))",
                    vec!["0", "3"],
                ),
            ];
            for (sql, expected) in cases {
                assert_eq!(
                    sorted_values(&ctx, sql).await,
                    *expected,
                    "{sql} (narrowing {narrowing})"
                );
            }
        }
    }

    #[tokio::test]
    async fn case_conditions_in_select_lists_are_guarded_too() {
        let ctx = context(true).await;
        let sql = "SELECT CASE WHEN x = 0 OR 8 % x = 0 THEN x END FROM g";
        assert_eq!(
            sorted_values(&ctx, sql).await,
            vec!["0", "0", "1", "2", "NULL", "NULL", "NULL"]
        );
        let sql = "SELECT CASE WHEN x <> 0 AND 8 % x = 0 THEN 'divides' ELSE 'no' END, x \
                   FROM g WHERE x IS NOT NULL";
        assert_eq!(
            sorted_values(&ctx, sql).await,
            vec!["divides|1", "divides|2", "no|0", "no|0", "no|3", "no|7"]
        );
    }

    #[tokio::test]
    async fn three_valued_answers_are_unchanged() {
        let ctx = context(true).await;
        // x = 0: FALSE AND … is FALSE, NOT of it TRUE; x NULL: `x <> 0` is NULL, so the
        // division is evaluated (8 % NULL is NULL) and the AND is NULL, as is NOT of it.
        let sql = "SELECT x FROM g WHERE NOT (x <> 0 AND 8 % x = 0)";
        assert_eq!(sorted_values(&ctx, sql).await, vec!["0", "0", "3", "7"]);
        let sql = "SELECT x FROM g WHERE (x <> 0 AND 8 % x = 0) IS NULL";
        assert_eq!(sorted_values(&ctx, sql).await, vec!["NULL"]);
        let sql = "SELECT x FROM g WHERE (x = 0 OR 8 % x = 1) IS NOT FALSE";
        assert_eq!(sorted_values(&ctx, sql).await, vec!["0", "0", "7", "NULL"]);
    }
}
