//! The rollup query rewrite: an optimizer rule that answers an aggregation over a base
//! table from one of its rollups, with re-aggregation, when the rollup can give the exact
//! same answer.
//!
//! A query `SELECT g…, agg… FROM base WHERE f… GROUP BY g…` is answered from a rollup when
//! - every grouping is a rollup dimension or partition column, or `date_trunc` of a
//!   dimension's time column to a grain the rollup's grain nests in (hour → day, month…);
//! - the rollup's own `WHERE` conjuncts are all in the query, and every other conjunct
//!   uses only dimensions and partition columns, or is a `>=` / `<` range on a truncated
//!   time column whose bound is aligned to the rollup's grain;
//! - every aggregate is count, sum, min, max or avg of columns whose states it keeps.
//!
//! Base partitions the rollup has not caught up with are aggregated from the base and
//! unioned in (their rollup rows left out), so the answer equals the un-rewritten query's.
//! With several candidates the smallest rollup wins. [`notes`] says, for `EXPLAIN`, which
//! rollup a query uses and why the others were not used.

use std::sync::{Arc, RwLock};

use arrow::datatypes::DataType;
use chrono::{DateTime, Datelike, Timelike, Utc};
use datafusion::catalog::TableProvider;
use datafusion::common::DFSchema;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, Result as DfResult, ScalarValue, TableReference};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::utils::{conjunction, disjunction, split_conjunction};
use datafusion::logical_expr::{
    Aggregate, BinaryExpr, Cast, Expr, LogicalPlan, LogicalPlanBuilder, Operator, TableSource,
    TryCast, cast, lit,
};
use datafusion::optimizer::analyzer::type_coercion::TypeCoercionRewriter;
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use super::{
    RollupIndex, RollupState, column, dimension_expr, grain_derivable, measure_expr,
    partition_predicate, storage_table,
};
use crate::catalog::{MeasureKind, RollupMeasure, TableEntry};
use crate::table::CATALOG_NAME;
use crate::table::CatalogTable;

/// Alias of the base-side subplan that catches up on stale partitions (never rewritten).
const CATCHUP: &str = "__rollup_catchup";

/// The rollups the rule chooses from, replaced on every catalog refresh.
pub type SharedIndex = Arc<RwLock<Arc<RollupIndex>>>;

/// The catalog entry behind a table scan's source, when it is a Tarn catalog table.
pub(crate) fn catalog_entry(source: &Arc<dyn TableSource>) -> Option<TableEntry> {
    let provider: Arc<dyn TableProvider> = source_as_provider(source).ok()?;
    provider
        .downcast_ref::<CatalogTable>()
        .map(|t| t.entry().clone())
}

/// `expr` with column qualifiers and aliases removed, so expressions over the same table
/// compare equal however the query named it.
pub(crate) fn strip(expr: &Expr) -> Expr {
    expr.clone()
        .transform(|e| {
            Ok(match e {
                Expr::Column(c) => Transformed::yes(Expr::Column(Column::new_unqualified(c.name))),
                Expr::Alias(a) => Transformed::yes(*a.expr),
                other => Transformed::no(other),
            })
        })
        .map(|t| t.data)
        .unwrap_or_else(|_| expr.clone())
}

/// `date_trunc('grain', column)` as `(grain, column)`.
pub(crate) fn truncation(expr: &Expr) -> Option<(String, String)> {
    let Expr::ScalarFunction(f) = expr else {
        return None;
    };
    if f.func.name() != "date_trunc" {
        return None;
    }
    match f.args.as_slice() {
        [
            Expr::Literal(ScalarValue::Utf8(Some(g)) | ScalarValue::Utf8View(Some(g)), _),
            arg,
        ] => {
            let c = match arg {
                Expr::Column(c) => c,
                Expr::Cast(Cast { expr, .. }) | Expr::TryCast(TryCast { expr, .. }) => {
                    match expr.as_ref() {
                        Expr::Column(c) => c,
                        _ => return None,
                    }
                }
                _ => return None,
            };
            Some((g.to_ascii_lowercase(), c.name.clone()))
        }
        _ => None,
    }
}

/// The optimizer rule.
#[derive(Debug)]
pub struct RollupRewrite {
    index: SharedIndex,
}

impl RollupRewrite {
    pub fn new(index: SharedIndex) -> Self {
        Self { index }
    }
}

impl OptimizerRule for RollupRewrite {
    fn name(&self) -> &str {
        "rollup_rewrite"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> DfResult<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = &plan else {
            return Ok(Transformed::no(plan));
        };
        let index = self
            .index
            .read()
            .map(|g| Arc::clone(&g))
            .unwrap_or_default();
        if index.is_empty() {
            return Ok(Transformed::no(plan));
        }
        match decide(aggregate, &index).chosen {
            Some((_, rewritten, _)) => Ok(Transformed::yes(rewritten)),
            None => Ok(Transformed::no(plan)),
        }
    }
}

/// What the rule decided for one aggregation.
pub struct Decision {
    /// The rollup used, the rewritten plan, and a note saying how.
    pub chosen: Option<(Arc<RollupState>, LogicalPlan, String)>,
    /// Why each other rollup of the base was not used.
    pub rejected: Vec<String>,
}

/// Chooses the smallest rollup that answers `aggregate` exactly.
pub fn decide(aggregate: &Aggregate, index: &RollupIndex) -> Decision {
    let mut decision = Decision {
        chosen: None,
        rejected: Vec::new(),
    };
    let Some((conjuncts, entry)) = source_of(&aggregate.input) else {
        return decision;
    };
    let Some(candidates) = index.get(&(entry.database.clone(), entry.name.clone())) else {
        return decision;
    };
    let mut best: Option<(u64, Arc<RollupState>, LogicalPlan, String)> = None;
    for state in candidates {
        let name = format!("{}.{}", state.def.database, state.def.name);
        match attempt(aggregate, &conjuncts, &entry, state) {
            Ok((plan, note)) => {
                let rows = state.storage.as_ref().map(|s| s.size().0).unwrap_or(0);
                match &best {
                    Some((r, other, _, _)) if *r <= rows => decision.rejected.push(format!(
                        "not used {name}: {}.{} is smaller",
                        other.def.database, other.def.name
                    )),
                    _ => {
                        if let Some((_, other, _, _)) = best.take() {
                            decision.rejected.push(format!(
                                "not used {}.{}: {name} is smaller",
                                other.def.database, other.def.name
                            ));
                        }
                        best = Some((rows, Arc::clone(state), plan, note));
                    }
                }
            }
            Err(reason) => decision.rejected.push(format!("not used {name}: {reason}")),
        }
    }
    decision.chosen = best.map(|(_, s, p, n)| (s, p, n));
    decision
}

/// For `EXPLAIN`: one line per aggregation over a table with rollups, saying which rollup
/// answers it and why the others do not.
pub fn notes(plan: &LogicalPlan, index: &RollupIndex) -> Vec<String> {
    let mut out = Vec::new();
    let _ = plan.apply(|node| {
        if let LogicalPlan::Aggregate(a) = node {
            let d = decide(a, index);
            if let Some((_, _, note)) = &d.chosen {
                out.push(note.clone());
            }
            out.extend(d.rejected);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out
}

/// The filters (stripped conjuncts) and the catalog table under an aggregation's input.
fn source_of(plan: &LogicalPlan) -> Option<(Vec<Expr>, TableEntry)> {
    let mut conjuncts: Vec<Expr> = Vec::new();
    let mut push = |e: &Expr| {
        for c in split_conjunction(e) {
            let c = strip(c);
            if !conjuncts.contains(&c) {
                conjuncts.push(c);
            }
        }
    };
    let mut node = plan;
    loop {
        match node {
            LogicalPlan::Filter(f) => {
                push(&f.predicate);
                node = f.input.as_ref();
            }
            LogicalPlan::SubqueryAlias(a) if a.alias.table() == CATCHUP => return None,
            LogicalPlan::SubqueryAlias(a) => node = a.input.as_ref(),
            // A view's select list that only picks columns (`CREATE VIEW v AS SELECT a, b
            // FROM t WHERE …`): the names the query uses are the base's.
            LogicalPlan::Projection(p) if p.expr.iter().all(keeps_its_column) => {
                node = p.input.as_ref();
            }
            LogicalPlan::TableScan(scan) if scan.fetch.is_none() => {
                for f in &scan.filters {
                    push(f);
                }
                // Streamed records still buffered are in no view's rows: the base answers.
                let provider = source_as_provider(&scan.source).ok()?;
                let table = provider.downcast_ref::<CatalogTable>()?;
                if table.has_buffered_rows() {
                    return None;
                }
                return Some((conjuncts, table.entry().clone()));
            }
            _ => return None,
        }
    }
}

/// Whether a projection's expression is a column under its own name.
pub(crate) fn keeps_its_column(expr: &Expr) -> bool {
    match expr {
        Expr::Column(_) => true,
        Expr::Alias(a) => matches!(a.expr.as_ref(), Expr::Column(c) if c.name == a.name),
        _ => false,
    }
}

/// A literal (possibly under casts), evaluated to its value in `target`.
fn constant(expr: &Expr) -> Option<ScalarValue> {
    match expr {
        Expr::Literal(v, _) => Some(v.clone()),
        Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) => {
            constant(expr)?.cast_to(field.data_type()).ok()
        }
        _ => None,
    }
}

/// A column, or a column cast to a timestamp type (how comparisons with timestamp
/// literals of another unit are typed): its name and the cast's type.
fn time_column(expr: &Expr) -> Option<(&str, Option<DataType>)> {
    match expr {
        Expr::Column(c) => Some((c.name.as_str(), None)),
        Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field })
            if matches!(field.data_type(), DataType::Timestamp(_, _)) =>
        {
            match expr.as_ref() {
                Expr::Column(c) => Some((c.name.as_str(), Some(field.data_type().clone()))),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether a timestamp value is on a boundary of `grain` (UTC).
fn aligned(value: &ScalarValue, grain: &str) -> bool {
    let (nanos, tz) = match value {
        ScalarValue::TimestampSecond(Some(v), tz) => (i128::from(*v) * 1_000_000_000, tz),
        ScalarValue::TimestampMillisecond(Some(v), tz) => (i128::from(*v) * 1_000_000, tz),
        ScalarValue::TimestampMicrosecond(Some(v), tz) => (i128::from(*v) * 1_000, tz),
        ScalarValue::TimestampNanosecond(Some(v), tz) => (i128::from(*v), tz),
        ScalarValue::Date32(Some(_)) | ScalarValue::Date64(Some(_)) => {
            return matches!(grain, "day" | "hour" | "minute" | "second");
        }
        _ => return false,
    };
    if tz.as_deref().is_some_and(|z| z != "UTC" && z != "+00:00") {
        return false;
    }
    let secs = nanos.div_euclid(1_000_000_000);
    let sub = nanos.rem_euclid(1_000_000_000);
    let Ok(secs) = i64::try_from(secs) else {
        return false;
    };
    let Some(t): Option<DateTime<Utc>> = DateTime::from_timestamp(secs, 0) else {
        return false;
    };
    let midnight = t.hour() == 0 && t.minute() == 0 && t.second() == 0 && sub == 0;
    match grain {
        "microsecond" => sub % 1_000 == 0,
        "millisecond" => sub % 1_000_000 == 0,
        "second" => sub == 0,
        "minute" => sub == 0 && t.second() == 0,
        "hour" => sub == 0 && t.second() == 0 && t.minute() == 0,
        "day" => midnight,
        "week" => midnight && t.weekday() == chrono::Weekday::Mon,
        "month" => midnight && t.day() == 1,
        "quarter" => midnight && t.day() == 1 && (t.month() - 1) % 3 == 0,
        "year" => midnight && t.day() == 1 && t.month() == 1,
        _ => false,
    }
}

/// Where the rollup keeps what a query refers to.
struct Columns<'a> {
    /// Base column → storage column, for columns kept as they are.
    plain: Vec<(String, String)>,
    /// Truncated time dimensions: (base column, grain, storage column).
    truncated: Vec<(&'a str, &'a str, &'a str)>,
}

impl<'a> Columns<'a> {
    /// The view's columns: its partition columns and plain dimensions as they are, and its
    /// truncated time dimensions.
    fn of(state: &'a RollupState) -> Self {
        let def = &state.def;
        let mut plain: Vec<(String, String)> = state
            .partition_columns
            .iter()
            .map(|c| (c.name.clone(), c.name.clone()))
            .collect();
        plain.extend(
            def.dimensions
                .iter()
                .filter(|d| d.grain.is_none())
                .map(|d| (d.column.clone(), d.name.clone())),
        );
        let truncated = def
            .dimensions
            .iter()
            .filter_map(|d| {
                d.grain
                    .as_deref()
                    .map(|g| (d.column.as_str(), g, d.name.as_str()))
            })
            .collect();
        Self { plain, truncated }
    }
}

impl Columns<'_> {
    fn plain(&self, base: &str) -> Option<&str> {
        self.plain
            .iter()
            .find(|(b, _)| b == base)
            .map(|(_, s)| s.as_str())
    }

    /// A conjunct over the base rewritten over the storage, when the rollup can apply it.
    fn filter(&self, conjunct: &Expr) -> Option<Expr> {
        let columns = conjunct.column_refs();
        if columns.iter().all(|c| self.plain(&c.name).is_some()) {
            return conjunct
                .clone()
                .transform(|e| {
                    Ok(match e {
                        Expr::Column(c) => match self.plain(&c.name) {
                            Some(s) => Transformed::yes(column(s)),
                            None => Transformed::no(Expr::Column(c)),
                        },
                        other => Transformed::no(other),
                    })
                })
                .ok()
                .map(|t| t.data);
        }
        // A range on a truncated time column, aligned to its grain.
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = conjunct else {
            return None;
        };
        let (time, op, bound_expr) = match (time_column(left), time_column(right)) {
            (Some(t), None) => (t, *op, right.as_ref()),
            (None, Some(t)) => (t, op.swap()?, left.as_ref()),
            _ => return None,
        };
        let bound = constant(bound_expr)?;
        if !matches!(op, Operator::GtEq | Operator::Lt) {
            return None;
        }
        let (c, to) = time;
        let (_, _, storage) = self
            .truncated
            .iter()
            .find(|(base, grain, _)| *base == c && aligned(&bound, grain))?;
        // A cast between timestamp units keeps bucket boundaries where they are.
        let stored = match to {
            Some(t) => cast(column(storage), t),
            None => column(storage),
        };
        Some(Expr::BinaryExpr(BinaryExpr::new(
            Box::new(stored),
            op,
            Box::new(bound_expr.clone()),
        )))
    }

    /// A grouping over the base rewritten over the storage.
    fn group(&self, expr: &Expr) -> Option<Expr> {
        if let Expr::Column(c) = expr {
            return self.plain(&c.name).map(column);
        }
        let (grain, base) = truncation(expr)?;
        // The same grain if kept, else the finest kept grain it nests in.
        let mut options: Vec<_> = self
            .truncated
            .iter()
            .filter(|(b, g, _)| *b == base && grain_derivable(&grain, g))
            .collect();
        options.sort_by_key(|(_, g, _)| *g != grain);
        let (_, g, storage) = options.first()?;
        Some(if *g == grain {
            column(storage)
        } else {
            datafusion::functions::expr_fn::date_trunc(lit(grain.as_str()), column(storage))
        })
    }
}

/// Partial aggregates over the storage, and the final expression of each aggregate.
struct Aggregates<'a> {
    measures: &'a [RollupMeasure],
    partials: Vec<Expr>,
    /// A kept `count(DISTINCT …)` the query uses: right only for whole rollup groups.
    exact_groups: Option<String>,
}

impl Aggregates<'_> {
    /// A reference to the re-aggregated state `kind(column)`.
    fn state(&mut self, kind: MeasureKind, arg: &Option<String>) -> Result<Expr, String> {
        let measure = RollupMeasure {
            kind,
            column: arg.clone(),
        };
        if !self.measures.contains(&measure) {
            let what = match arg {
                Some(c) => format!("{}({c})", kind.as_str()),
                None => "count(*)".into(),
            };
            return Err(format!("it does not keep {what}"));
        }
        use datafusion::functions_aggregate::expr_fn::{max, min, sum};
        let stored = column(&measure.storage_name());
        let partial = match kind {
            MeasureKind::Count | MeasureKind::Sum => sum(stored),
            MeasureKind::Min => min(stored),
            MeasureKind::Max => max(stored),
            MeasureKind::ApproxDistinct => super::sketch::merge_udaf().call(vec![stored]),
            // One row per group (the query groups exactly like the rollup).
            MeasureKind::CountDistinct => {
                self.exact_groups =
                    Some(format!("count(DISTINCT {})", arg.as_deref().unwrap_or("*")));
                max(stored)
            }
        };
        let name = format!("__p{}", self.partials.len());
        self.partials.push(partial.alias(&name));
        Ok(column(&name))
    }

    /// The final expression of one of the query's aggregates.
    fn aggregate(&mut self, expr: &Expr, output: &DataType) -> Result<Expr, String> {
        let Expr::AggregateFunction(AggregateFunction { func, params }) = expr else {
            return Err(format!("{expr} is not a plain aggregate"));
        };
        let name = func.name();
        if params.distinct && name != "count"
            || params.filter.is_some()
            || !params.order_by.is_empty()
        {
            return Err(format!("{expr} cannot be merged from partial states"));
        }
        // Distinct counts hash the column's own values: no casts.
        if (params.distinct || name == "approx_distinct")
            && !matches!(params.args.as_slice(), [Expr::Column(_)])
        {
            return Err(format!("{expr} is not a distinct count of a column"));
        }
        let arg = match params.args.as_slice() {
            [] => None,
            [Expr::Literal(v, _)] if name == "count" && !v.is_null() => None,
            [Expr::Column(c)] => Some(c.name.clone()),
            [Expr::Cast(Cast { expr, .. }) | Expr::TryCast(TryCast { expr, .. })] => {
                match expr.as_ref() {
                    Expr::Column(c) => Some(c.name.clone()),
                    _ => return Err(format!("{expr} is not an aggregate of a column")),
                }
            }
            _ => return Err(format!("{expr} is not an aggregate of a column")),
        };
        let value = match name {
            "count" if params.distinct => self.state(MeasureKind::CountDistinct, &arg)?,
            "approx_distinct" => self.state(MeasureKind::ApproxDistinct, &arg)?,
            "count" => datafusion::functions::expr_fn::coalesce(vec![
                self.state(MeasureKind::Count, &arg)?,
                lit(0i64),
            ]),
            "sum" if arg.is_some() => self.state(MeasureKind::Sum, &arg)?,
            "min" if arg.is_some() => self.state(MeasureKind::Min, &arg)?,
            "max" if arg.is_some() => self.state(MeasureKind::Max, &arg)?,
            "avg" if arg.is_some() && *output == DataType::Float64 => {
                let total = self.state(MeasureKind::Sum, &arg)?;
                let count = self.state(MeasureKind::Count, &arg)?;
                cast(total, DataType::Float64)
                    / cast(
                        datafusion::functions::expr_fn::nullif(count, lit(0i64)),
                        DataType::Float64,
                    )
            }
            // DataFusion's decimal average: the sum scaled to the result's scale over the
            // count, truncated; the same integers from the kept states.
            "avg" if arg.is_some() && matches!(output, DataType::Decimal128(_, _)) => {
                let total = self.state(MeasureKind::Sum, &arg)?;
                let count = self.state(MeasureKind::Count, &arg)?;
                tarn_optimizer::avg::decimal_average(output.clone(), total, count)
            }
            "avg" => return Err(format!("{expr} returns {output}, not a float or decimal")),
            other => return Err(format!("{other}() cannot be merged from partial states")),
        };
        Ok(value)
    }
}

/// Answers `aggregate` from `state`, or says why not.
fn attempt(
    aggregate: &Aggregate,
    conjuncts: &[Expr],
    entry: &TableEntry,
    state: &Arc<RollupState>,
) -> Result<(LogicalPlan, String), String> {
    let def = &state.def;
    let storage = state
        .storage
        .as_ref()
        .ok_or_else(|| "it has not been computed yet (REFRESH MATERIALIZED VIEW)".to_string())?;
    if state.base_version != entry.version {
        return Err("the base table changed while the query was planned".into());
    }
    if let Some(error) = &state.last_error {
        return Err(format!(
            "its last refresh failed ({error}); the base answers until REFRESH MATERIALIZED \
             VIEW {}.{} succeeds",
            def.database, def.name
        ));
    }
    let columns = Columns::of(state);

    // Filters: the rollup's own must all be in the query; the rest must be answerable.
    let mut remaining: Vec<&Expr> = conjuncts.iter().collect();
    for own in &state.filter {
        match remaining.iter().position(|c| *c == own) {
            Some(i) => {
                remaining.remove(i);
            }
            None => {
                return Err(format!(
                    "its WHERE condition {own} is not among the query's conditions"
                ));
            }
        }
    }
    let mut filters = Vec::new();
    for c in remaining {
        filters.push(columns.filter(c).ok_or_else(|| {
            format!(
                "the condition {c} is not on its dimensions (nor a >= / < range aligned to \
                 its time grain)"
            )
        })?);
    }

    let mut groups = Vec::new();
    for (i, g) in aggregate.group_expr.iter().enumerate() {
        let g = strip(g);
        let expr = columns
            .group(&g)
            .ok_or_else(|| format!("GROUP BY {g} is not one of its dimensions"))?;
        groups.push(expr.alias(format!("__g{i}")));
    }
    let mut aggregates = Aggregates {
        measures: &def.measures,
        partials: Vec::new(),
        exact_groups: None,
    };
    let schema = aggregate.schema.as_ref();
    let mut finals = Vec::new();
    for (j, a) in aggregate.aggr_expr.iter().enumerate() {
        let (_, field) = schema.qualified_field(aggregate.group_expr.len() + j);
        finals.push(aggregates.aggregate(&strip(a), field.data_type())?);
    }
    if let Some(what) = &aggregates.exact_groups {
        exact_grouping(&groups, state, what)?;
    }

    // Within the view's staleness allowance, its rows are served as they are.
    let catch_up = !state.within_staleness_allowance(Utc::now());
    let stale = catch_up && !state.stale.is_empty();
    let build = || -> DfResult<LogicalPlan> {
        let reference = TableReference::full(
            CATALOG_NAME,
            def.database.as_str(),
            storage_table(&def.name).as_str(),
        );
        let source = match &state.memory {
            Some(rows) => provider_as_source(Arc::clone(rows) as Arc<dyn TableProvider>),
            None => provider_as_source(Arc::clone(storage) as Arc<dyn TableProvider>),
        };
        let mut rollup = LogicalPlanBuilder::scan(reference, source, None)?;
        if let Some(f) = conjunction(filters.clone()) {
            rollup = rollup.filter(f)?;
        }
        if catch_up && !state.excluded.is_empty() {
            let excluded = disjunction(
                state
                    .excluded
                    .iter()
                    .map(|k| partition_predicate(&state.partition_columns, k)),
            );
            if let Some(excluded) = excluded {
                rollup = rollup.filter(excluded.is_not_true())?;
            }
        }
        let mut input = rollup;
        if stale {
            let storage_schema = storage.schema();
            let names: Vec<Expr> = storage_schema
                .fields()
                .iter()
                .map(|f| column(f.name()))
                .collect();
            let rollup = input.project(names)?;
            input = rollup.union(catch_up_rows(aggregate, state, &storage_schema)?)?;
        }
        let partials = coerced(aggregates.partials.clone(), input.schema())?;
        let merged = input.aggregate(groups.clone(), partials)?;
        let mut outputs = Vec::new();
        for i in 0..aggregate.group_expr.len() {
            let (qualifier, field) = schema.qualified_field(i);
            outputs.push(
                cast(column(&format!("__g{i}")), field.data_type().clone())
                    .alias_qualified(qualifier.cloned(), field.name()),
            );
        }
        for (j, value) in finals.iter().enumerate() {
            let (qualifier, field) = schema.qualified_field(aggregate.group_expr.len() + j);
            outputs.push(
                cast(value.clone(), field.data_type().clone())
                    .alias_qualified(qualifier.cloned(), field.name()),
            );
        }
        merged.project(outputs)?.build()
    };
    let plan = build().map_err(|e| format!("building the rewritten plan failed: {e}"))?;
    Ok((plan, used_note(entry, state, storage, catch_up, stale)))
}

/// The rows of the base partitions `state` has not caught up with, aggregated as the view
/// stores them (its keys and measure states, cast to its storage schema `storage_schema`),
/// from the query's own input `aggregate.input`.
fn catch_up_rows(
    aggregate: &Aggregate,
    state: &RollupState,
    storage_schema: &datafusion::arrow::datatypes::SchemaRef,
) -> DfResult<LogicalPlan> {
    let def = &state.def;
    let which = disjunction(
        state
            .stale
            .iter()
            .map(|k| partition_predicate(&state.partition_columns, k)),
    )
    .unwrap_or_else(|| lit(false));
    let mut keys: Vec<Expr> = def
        .dimensions
        .iter()
        .map(|d| dimension_expr(d).alias(&d.name))
        .collect();
    keys.extend(state.partition_columns.iter().map(|c| column(&c.name)));
    let states: Vec<Expr> = def
        .measures
        .iter()
        .map(|m| measure_expr(m).alias(m.storage_name()))
        .collect();
    let stale_rows = LogicalPlanBuilder::from(aggregate.input.as_ref().clone())
        .alias(CATCHUP)?
        .filter(which)?;
    let states = coerced(states, stale_rows.schema())?;
    stale_rows
        .aggregate(keys, states)?
        .project(
            storage_schema
                .fields()
                .iter()
                .map(|f| cast(column(f.name()), f.data_type().clone()).alias(f.name())),
        )?
        .build()
}

/// EXPLAIN's note for a view that answered: which, how large, and what of it was stale.
fn used_note(
    entry: &TableEntry,
    state: &RollupState,
    storage: &CatalogTable,
    catch_up: bool,
    stale: bool,
) -> String {
    let def = &state.def;
    let (rows, _) = storage.size();
    let mut note = format!(
        "used {}.{} ({rows} rows{}) for the aggregation over {}.{}",
        def.database,
        def.name,
        if state.memory.is_some() {
            ", in memory"
        } else {
            ""
        },
        entry.database,
        entry.name
    );
    if stale {
        note.push_str(&format!(
            "; {} of {} base partition(s) it has not caught up with read from the base",
            state.stale.len(),
            state.base_partitions
        ));
    } else if !(catch_up || state.stale.is_empty() && state.excluded.is_empty()) {
        note.push_str(&format!(
            "; {} stale partition(s) served from the rollup (within its staleness allowance)",
            state.stale.len()
        ));
    }
    note
}

/// `exprs` over `schema` with their arguments cast as the analyzer casts a query's own.
/// The rewrite builds its aggregates after the analyzer ran: without this, the catch-up's
/// `sum(v)` over an Int32 `v` (or any type `sum` takes only once widened: narrow and
/// unsigned integers, Float32) fails at execution.
fn coerced(exprs: Vec<Expr>, schema: &DFSchema) -> DfResult<Vec<Expr>> {
    exprs
        .into_iter()
        .map(|e| {
            let mut rewriter = TypeCoercionRewriter::new(schema);
            e.rewrite(&mut rewriter).map(|t| t.data)
        })
        .collect()
}

/// A kept distinct count is one value per rollup group: the query must group by exactly the
/// rollup's groups (its dimensions and storage partition columns, each at its own grain).
fn exact_grouping(groups: &[Expr], state: &RollupState, what: &str) -> Result<(), String> {
    let mut wanted: Vec<&str> = state
        .partition_columns
        .iter()
        .map(|c| c.name.as_str())
        .chain(state.def.dimensions.iter().map(|d| d.name.as_str()))
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut got: Vec<&str> = Vec::new();
    for g in groups {
        let inner = match g {
            Expr::Alias(a) => a.expr.as_ref(),
            other => other,
        };
        match inner {
            Expr::Column(c) => got.push(c.name.as_str()),
            _ => got.push(""),
        }
    }
    got.sort_unstable();
    got.dedup();
    if got == wanted {
        Ok(())
    } else {
        Err(format!(
            "{what} is kept per group of the view, so the query must GROUP BY exactly its \
             groups ({})",
            wanted.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grains_nest_except_weeks_in_months() {
        assert!(grain_derivable("day", "hour"));
        assert!(grain_derivable("month", "day"));
        assert!(grain_derivable("week", "day"));
        assert!(!grain_derivable("month", "week"));
        assert!(!grain_derivable("hour", "day"));
        assert!(grain_derivable("hour", "hour"));
    }

    #[test]
    fn alignment_to_grains() {
        // 2024-01-01T00:00:00Z, a Monday.
        let t = |s: i64| ScalarValue::TimestampMicrosecond(Some(s * 1_000_000), None);
        let jan1 = 1_704_067_200;
        assert!(aligned(&t(jan1), "year"));
        assert!(aligned(&t(jan1), "week"));
        assert!(aligned(&t(jan1 + 3600), "hour"));
        assert!(!aligned(&t(jan1 + 3600), "day"));
        assert!(!aligned(&t(jan1 + 60), "hour"));
        assert!(!aligned(&t(jan1 + 86_400), "week"));
    }
}
