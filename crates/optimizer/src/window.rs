//! A correlated minimum or maximum over the query's own join, taken as a window instead.
//!
//! `WHERE ps.cost = (SELECT min(ps2.cost) FROM partsupp ps2, supplier s2, … WHERE
//! ps2.partkey = p.partkey AND …)` asks, for each row, for the least cost among the rows
//! that share its part. When the subquery joins the same tables with the same conditions
//! as the outer query (TPC-H Q2; the "latest row per key" query, `WHERE t.ts = (SELECT
//! max(t2.ts) FROM t t2 WHERE t2.id = t.id)`), decorrelation still computes it as a second
//! join and an aggregation, reading every table twice. The outer rows that share a key are
//! exactly the subquery's rows for that key, repeated once per row of the tables the
//! outer query adds (`part` in Q2), and a minimum or maximum does not change with
//! repetition. So the rule computes `min(ps.cost) OVER (PARTITION BY ps.partkey)` over the
//! outer join and compares with that: every table is read once.
//!
//! The rule applies to an inner join of a query (`L`) with an aggregation (the subquery,
//! as decorrelation leaves it: on the right, under an alias) where:
//! - the aggregation groups by one column `g` (constants aside) and every aggregate is a
//!   plain `min` or `max`;
//! - its input joins tables that are each one of `L`'s tables, read with the same filters
//!   (aliases may differ), with inner joins only;
//! - the conditions among those tables are the same in both (equalities compared as
//!   classes of equal columns), so `L` keeps exactly the subquery's rows of each group;
//! - `L`'s other tables meet those tables only by equalities with `g`'s class, so each
//!   group's rows are kept or dropped together;
//! - the join matches the subquery's `g` with a column of that class.
//!
//! The join becomes a window over `L` partitioned by `g`, a filter with the join's
//! conditions (the one on `g` also drops null keys, as the join did), and a projection
//! giving the join's columns. Anything else is left as it was.
//!
//! A second rule, [`TotalAsWindow`], does the same for an uncorrelated subquery that
//! totals the rows the query groups: TPC-H Q11 keeps the parts whose value is more than a
//! share of the whole, `HAVING sum(v) > (SELECT sum(v) * 0.0001 FROM <the same join>)`,
//! and read `partsupp` twice. The sum over all rows is the sum of the groups' sums, so the
//! filter compares with `sum(sum(v)) OVER ()` over the aggregation's result. It applies
//! to a filter over an aggregation whose one scalar subquery, uncorrelated, aggregates
//! without grouping:
//! - over the same tables as the aggregation, each read alike, with the same conditions;
//! - with plain `sum` (of integers or decimals, whose sums do not depend on the order of
//!   addition), `min` or `max`, each of an argument the aggregation also takes it of.
//!
//! `--datafusion-config tarn.subquery_as_window=false` turns both rules off.

use std::collections::HashMap;

use arrow::datatypes::DataType;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, JoinType, NullEquality, Result, TableReference};
use datafusion::logical_expr::expr::{AggregateFunction, WindowFunction};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    Aggregate, BinaryExpr, Expr, ExprFunctionExt, ExprSchemable, Filter, Join, LogicalPlan,
    LogicalPlanBuilder, Operator, WindowFunctionDefinition, cast,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use super::TarnOptions;
use super::joinorder::{Classes, Tree};

/// The rule; see the module documentation.
#[derive(Debug, Default)]
pub struct SubqueryAsWindow;

impl OptimizerRule for SubqueryAsWindow {
    fn name(&self) -> &str {
        "tarn_subquery_as_window"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        if !TarnOptions::get(&config.options(), |o| o.subquery_as_window) {
            return Ok(Transformed::no(plan));
        }
        super::replaced(plan, |plan| match plan {
            LogicalPlan::Join(join) => as_window(join),
            _ => Ok(None),
        })
    }
}

/// A plain `min` or `max` of one argument.
fn extremum(e: &Expr) -> Option<&AggregateFunction> {
    let f = match e {
        Expr::AggregateFunction(f) => f,
        Expr::Alias(a) => return extremum(&a.expr),
        _ => return None,
    };
    let p = &f.params;
    let plain = !p.distinct && p.filter.is_none() && p.order_by.is_empty() && p.args.len() == 1;
    (plain && matches!(f.func.name(), "min" | "max")).then_some(f)
}

fn unaliased(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => unaliased(&a.expr),
        other => other,
    }
}

/// `a = b` of two columns.
fn equality(e: &Expr) -> Option<(&Column, &Column)> {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => match (unaliased(left), unaliased(right)) {
            (Expr::Column(a), Expr::Column(b)) => Some((a, b)),
            _ => None,
        },
        _ => None,
    }
}

/// A table read: its qualifier in the query, and what it reads (table, filters, limit)
/// with qualifiers removed, to compare reads under different aliases. `None` for anything
/// but filters over a scan, under at most one alias.
fn read(plan: &LogicalPlan) -> Option<(TableReference, String)> {
    let mut parts = Vec::new();
    let mut qualifier = None;
    let mut node = plan;
    loop {
        match node {
            LogicalPlan::Filter(f) => {
                parts.push(format!("filter {}", unqualified(&f.predicate).ok()?));
                node = &f.input;
            }
            LogicalPlan::SubqueryAlias(a) if qualifier.is_none() => {
                qualifier = Some(a.alias.clone());
                node = &a.input;
            }
            LogicalPlan::TableScan(scan) => {
                let mut filters = scan
                    .filters
                    .iter()
                    .map(|f| unqualified(f).map(|e| e.to_string()))
                    .collect::<Result<Vec<_>>>()
                    .ok()?;
                filters.sort();
                parts.sort();
                parts.push(format!(
                    "scan {} {filters:?} {:?}",
                    scan.table_name, scan.fetch
                ));
                return Some((
                    qualifier.unwrap_or_else(|| scan.table_name.clone()),
                    parts.join("; "),
                ));
            }
            _ => return None,
        }
    }
}

fn unqualified(e: &Expr) -> Result<Expr> {
    e.clone()
        .transform(|e| match e {
            Expr::Column(c) => Ok(Transformed::yes(Expr::Column(Column::new_unqualified(
                c.name,
            )))),
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data)
}

/// `e` with the qualifiers of `mapping` replaced; `None` when it names a column of
/// another qualifier.
fn mapped(e: &Expr, mapping: &HashMap<TableReference, TableReference>) -> Option<Expr> {
    let mut complete = true;
    let out = e
        .clone()
        .transform(|e| match e {
            Expr::Column(c) => match c.relation.as_ref().and_then(|q| mapping.get(q)) {
                Some(to) => Ok(Transformed::yes(Expr::Column(Column::new(
                    Some(to.clone()),
                    c.name,
                )))),
                None => {
                    complete = false;
                    Ok(Transformed::no(Expr::Column(c)))
                }
            },
            other => Ok(Transformed::no(other)),
        })
        .ok()?
        .data;
    complete.then_some(out)
}

/// `e` with the columns `values` holds replaced by their values.
fn substitute(e: &Expr, values: &HashMap<Column, Expr>) -> Result<Expr> {
    e.clone()
        .transform(|e| match e {
            Expr::Column(c) => match values.get(&c) {
                Some(v) => Ok(Transformed::yes(v.clone())),
                None => Ok(Transformed::no(Expr::Column(c))),
            },
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data)
}

/// How a subquery's tables are found among the outer query's: each of its inputs matched
/// with one of the outer query's read alike (same table, same filters).
struct Reads {
    /// The subquery's qualifiers to the outer query's.
    mapping: HashMap<TableReference, TableReference>,
    /// Which of the outer query's inputs are matched.
    matched: Vec<bool>,
    /// The subquery's conditions, under the outer query's qualifiers.
    inner_predicates: Vec<Expr>,
}

/// `inner`'s inputs matched with `outer`'s; `None` where one is not read alike by the
/// outer query or a condition names another table.
fn match_reads(inner: &Tree, outer: &Tree) -> Option<Reads> {
    let mut mapping = HashMap::new();
    let mut matched = vec![false; outer.leaves.len()];
    let outer_reads: Vec<Option<(TableReference, String)>> =
        outer.leaves.iter().map(read).collect();
    for leaf in &inner.leaves {
        let (from, what) = read(leaf)?;
        let i = (0..outer.leaves.len())
            .find(|i| !matched[*i] && outer_reads[*i].as_ref().is_some_and(|(_, w)| *w == what))?;
        matched[i] = true;
        let (to, _) = outer_reads[i].as_ref()?;
        if mapping.insert(from, to.clone()).is_some() {
            return None;
        }
    }
    let inner_predicates = inner
        .predicates
        .iter()
        .map(|p| mapped(p, &mapping))
        .collect::<Option<Vec<_>>>()?;
    Some(Reads {
        mapping,
        matched,
        inner_predicates,
    })
}

/// Whether two lists of conditions over the same tables are the same, equalities compared
/// as classes of equal columns; the classes of the first where they are.
fn same_conditions(inner: &[Expr], outer: &[Expr]) -> Option<Classes> {
    let classes = |predicates: &[Expr]| {
        let mut classes = Classes::default();
        for p in predicates {
            if let Some((a, b)) = equality(p) {
                classes.union(a, b);
            }
        }
        classes
    };
    let (mut inner_classes, mut outer_classes) = (classes(inner), classes(outer));
    let implied = |p: &Expr, classes: &mut Classes, others: &[Expr]| match equality(p) {
        Some((a, b)) => classes.find(a) == classes.find(b),
        None => others.contains(p),
    };
    let same = inner.iter().all(|p| implied(p, &mut outer_classes, outer))
        && outer.iter().all(|p| implied(p, &mut inner_classes, inner));
    same.then_some(inner_classes)
}

/// The plan described in the module documentation, or `None` where it does not apply.
fn as_window(join: &Join) -> Result<Option<LogicalPlan>> {
    if join.join_type != JoinType::Inner
        || join.null_equality != NullEquality::NullEqualsNothing
        || join.null_aware
        || join.on.is_empty()
    {
        return Ok(None);
    }
    let LogicalPlan::SubqueryAlias(subquery) = join.right.as_ref() else {
        return Ok(None);
    };
    let (outputs, aggregate): (Option<&Vec<Expr>>, &Aggregate) = match subquery.input.as_ref() {
        LogicalPlan::Projection(p) => match p.input.as_ref() {
            LogicalPlan::Aggregate(a) => (Some(&p.expr), a),
            _ => return Ok(None),
        },
        LogicalPlan::Aggregate(a) => (None, a),
        _ => return Ok(None),
    };
    // One grouping column; constants aside.
    let mut group = None;
    for e in &aggregate.group_expr {
        match unaliased(e) {
            Expr::Column(c) if group.is_none() => group = Some(c),
            Expr::Literal(..) => {}
            _ => return Ok(None),
        }
    }
    let Some(group) = group else {
        return Ok(None);
    };
    let Some(functions) = aggregate
        .aggr_expr
        .iter()
        .map(extremum)
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(None);
    };
    if functions.is_empty() {
        return Ok(None);
    }

    // Each of the subquery's tables is one of the outer query's, read alike.
    let (mut inner, mut outer) = (Tree::default(), Tree::default());
    inner.collect(&aggregate.input);
    outer.collect(&join.left);
    let Some(Reads {
        mapping,
        matched,
        inner_predicates,
    }) = match_reads(&inner, &outer)
    else {
        return Ok(None);
    };
    let Some(group_out) = mapped(&Expr::Column(group.clone()), &mapping) else {
        return Ok(None);
    };
    let Expr::Column(group_col) = &group_out else {
        return Ok(None);
    };

    // The outer conditions: among the matched tables, with the others, or among the others.
    let owner = |c: &Column| -> Option<bool> {
        let i = outer.leaves.iter().position(|l| l.schema().has_column(c))?;
        Some(matched[i])
    };
    let mut among = Vec::new();
    let mut links = Vec::new();
    for p in &outer.predicates {
        let sides: Option<Vec<bool>> = p.column_refs().into_iter().map(owner).collect();
        let Some(sides) = sides else {
            return Ok(None);
        };
        if sides.iter().all(|m| *m) {
            among.push(p.clone());
        } else if sides.iter().any(|m| *m) {
            links.push(p.clone());
        }
    }
    let Some(mut inner_classes) = same_conditions(&inner_predicates, &among) else {
        return Ok(None);
    };
    // The other tables meet the matched ones only on the grouping column's class.
    let mut outer_classes = Classes::default();
    for p in &outer.predicates {
        if let Some((a, b)) = equality(p) {
            outer_classes.union(a, b);
        }
    }
    for p in &links {
        let Some((a, b)) = equality(p) else {
            return Ok(None);
        };
        let mine = if owner(a) == Some(true) { a } else { b };
        if inner_classes.find(mine) != inner_classes.find(group_col) {
            return Ok(None);
        }
    }

    // The subquery's columns as expressions over the outer query.
    let mut replacement: HashMap<Column, Expr> = HashMap::new();
    let mut windows = Vec::new();
    let fields = aggregate.schema.columns();
    for (i, e) in aggregate.group_expr.iter().enumerate() {
        let value = match unaliased(e) {
            Expr::Column(_) => group_out.clone(),
            other => other.clone(),
        };
        replacement.insert(fields[i].clone(), value);
    }
    for (j, f) in functions.iter().enumerate() {
        let Some(arg) = mapped(&f.params.args[0], &mapping) else {
            return Ok(None);
        };
        let window = Expr::from(WindowFunction::new(
            WindowFunctionDefinition::AggregateUDF(f.func.clone()),
            vec![arg],
        ))
        .partition_by(vec![group_out.clone()])
        .build()?;
        let name = window.schema_name().to_string();
        replacement.insert(
            fields[aggregate.group_expr.len() + j].clone(),
            Expr::Column(Column::from_name(name)),
        );
        windows.push(window);
    }
    // The subquery's output columns, as the join sees them (under its alias).
    let mut output: HashMap<Column, Expr> = HashMap::new();
    let alias = &subquery.alias;
    for (i, field) in subquery.schema.fields().iter().enumerate() {
        let value = match outputs {
            Some(exprs) => substitute(unaliased(&exprs[i]), &replacement)?,
            None => replacement
                .get(&fields[i])
                .cloned()
                .unwrap_or_else(|| Expr::Column(fields[i].clone())),
        };
        output.insert(Column::new(Some(alias.clone()), field.name()), value);
    }
    if !keyed_on_group(join, &output, &group_out, &mut outer_classes, group_col) {
        return Ok(None);
    }
    over_outer(join, windows, &output)
}

/// Whether the join matches the subquery's grouping column (`group_out`, as the outer query
/// computes it) with a column of the same equality class.
fn keyed_on_group(
    join: &Join,
    output: &HashMap<Column, Expr>,
    group_out: &Expr,
    outer_classes: &mut Classes,
    group_col: &Column,
) -> bool {
    let group_output = output
        .iter()
        .filter(|(_, v)| *v == group_out)
        .map(|(k, _)| k.clone())
        .collect::<Vec<_>>();
    join.on
        .iter()
        .any(|(l, r)| match (unaliased(l), unaliased(r)) {
            (Expr::Column(l), Expr::Column(r)) => {
                group_output.contains(r)
                    && join.left.schema().has_column(l)
                    && outer_classes.find(l) == outer_classes.find(group_col)
            }
            _ => false,
        })
}

/// The outer query with the subquery's `windows` computed over its rows, the join's
/// conditions as a filter, and the join's columns (the subquery's from `output`); `None`
/// when a window reads a column the outer query does not give.
fn over_outer(
    join: &Join,
    windows: Vec<Expr>,
    output: &HashMap<Column, Expr>,
) -> Result<Option<LogicalPlan>> {
    // Every column the window reads must be in the outer query's result.
    let needed = windows
        .iter()
        .flat_map(|w| w.column_refs().into_iter().cloned().collect::<Vec<_>>());
    if !needed
        .into_iter()
        .all(|c| join.left.schema().has_column(&c))
    {
        return Ok(None);
    }

    let mut conditions = Vec::new();
    for (l, r) in &join.on {
        conditions.push(l.clone().eq(substitute(r, output)?));
    }
    if let Some(f) = &join.filter {
        conditions.push(substitute(f, output)?);
    }
    let Some(condition) = conjunction(conditions) else {
        return Ok(None);
    };
    let mut columns = Vec::new();
    for (qualifier, field) in join.schema.iter() {
        let column = Column::new(qualifier.cloned(), field.name());
        match output.get(&column) {
            Some(value) => columns.push(
                value
                    .clone()
                    .alias_qualified(qualifier.cloned(), field.name()),
            ),
            None => columns.push(Expr::Column(column)),
        }
    }
    let plan = LogicalPlanBuilder::from(join.left.as_ref().clone())
        .window(windows)?
        .filter(condition)?
        .project(columns)?
        .build()?;
    Ok(Some(plan))
}

/// An uncorrelated subquery that totals the query's own grouped rows, taken as a window
/// over the groups: see the module documentation.
#[derive(Debug, Default)]
pub struct TotalAsWindow;

impl OptimizerRule for TotalAsWindow {
    fn name(&self) -> &str {
        "tarn_total_as_window"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        if !TarnOptions::get(&config.options(), |o| o.subquery_as_window) {
            return Ok(Transformed::no(plan));
        }
        super::replaced(plan, |plan| match plan {
            LogicalPlan::Filter(filter) => total_as_window(filter),
            _ => Ok(None),
        })
    }
}

/// A plain `sum`, `min` or `max` of one argument, and whether totalling its values per
/// group gives the total over all rows exactly: any type for `min` and `max`, integers
/// and decimals for `sum` (a floating-point sum changes with the order of addition).
fn totalled<'a>(
    e: &'a Expr,
    schema: &datafusion::common::DFSchema,
) -> Option<&'a AggregateFunction> {
    let f = match e {
        Expr::AggregateFunction(f) => f,
        Expr::Alias(a) => return totalled(&a.expr, schema),
        _ => return None,
    };
    let p = &f.params;
    if p.distinct || p.filter.is_some() || !p.order_by.is_empty() || p.args.len() != 1 {
        return None;
    }
    match f.func.name() {
        "min" | "max" => Some(f),
        "sum" => {
            let exact = p.args[0].get_type(schema).ok()?;
            (exact.is_integer() || matches!(exact, DataType::Decimal128(..))).then_some(f)
        }
        _ => None,
    }
}

/// The filter over an aggregation, with its uncorrelated subquery that totals the
/// aggregation's own input taken as a window over the groups; `None` where it does not
/// apply.
fn total_as_window(filter: &Filter) -> Result<Option<LogicalPlan>> {
    let LogicalPlan::Aggregate(groups) = filter.input.as_ref() else {
        return Ok(None);
    };
    // Grouping sets count each row once per set.
    if groups
        .group_expr
        .iter()
        .any(|e| matches!(e, Expr::GroupingSet(_)))
    {
        return Ok(None);
    }
    let mut subqueries = Vec::new();
    filter.predicate.apply(|e| {
        if let Expr::ScalarSubquery(s) = e {
            subqueries.push(s.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let [subquery] = subqueries.as_slice() else {
        return Ok(None);
    };
    if !subquery.outer_ref_columns.is_empty() {
        return Ok(None);
    }
    let (output, total): (Option<&Expr>, &Aggregate) = match subquery.subquery.as_ref() {
        LogicalPlan::Projection(p) => match (p.expr.as_slice(), p.input.as_ref()) {
            ([e], LogicalPlan::Aggregate(a)) => (Some(e), a),
            _ => return Ok(None),
        },
        LogicalPlan::Aggregate(a) => (None, a),
        _ => return Ok(None),
    };
    if !total.group_expr.is_empty() || total.aggr_expr.is_empty() {
        return Ok(None);
    }
    // The subquery reads the aggregation's rows: the same tables, read alike, with the
    // same conditions.
    let (mut inner, mut outer) = (Tree::default(), Tree::default());
    inner.collect(&total.input);
    outer.collect(&groups.input);
    if inner.leaves.len() != outer.leaves.len() {
        return Ok(None);
    }
    let Some(reads) = match_reads(&inner, &outer) else {
        return Ok(None);
    };
    if same_conditions(&reads.inner_predicates, &outer.predicates).is_none() {
        return Ok(None);
    }
    // Each total is the same function of the same argument as one of the groups' columns.
    let group_columns = groups.schema.columns();
    let first_aggregate = group_columns.len() - groups.aggr_expr.len();
    let mut windows = Vec::new();
    let mut values: HashMap<Column, Expr> = HashMap::new();
    for (j, e) in total.aggr_expr.iter().enumerate() {
        let Some(f) = totalled(e, total.input.schema()) else {
            return Ok(None);
        };
        let Some(arg) = mapped(&f.params.args[0], &reads.mapping) else {
            return Ok(None);
        };
        let Some(at) = groups.aggr_expr.iter().position(|g| {
            totalled(g, groups.input.schema())
                .is_some_and(|g| g.func.name() == f.func.name() && g.params.args[0] == arg)
        }) else {
            return Ok(None);
        };
        let window = Expr::from(WindowFunction::new(
            WindowFunctionDefinition::AggregateUDF(f.func.clone()),
            vec![Expr::Column(group_columns[first_aggregate + at].clone())],
        ));
        let name = window.schema_name().to_string();
        let field = total.schema.field(j);
        // A sum of sums is wider than the sum it equals.
        values.insert(
            total.schema.columns()[j].clone(),
            cast(
                Expr::Column(Column::from_name(name)),
                field.data_type().clone(),
            ),
        );
        windows.push(window);
    }
    let value = match output {
        Some(e) => substitute(unaliased(e), &values)?,
        None => match values.values().next() {
            Some(v) if values.len() == 1 => v.clone(),
            _ => return Ok(None),
        },
    };
    let predicate = filter
        .predicate
        .clone()
        .transform(|e| match e {
            Expr::ScalarSubquery(_) => Ok(Transformed::yes(value.clone())),
            other => Ok(Transformed::no(other)),
        })?
        .data;
    let columns: Vec<Expr> = groups
        .schema
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    let plan = LogicalPlanBuilder::from(filter.input.as_ref().clone())
        .window(windows)?
        .filter(predicate)?
        .project(columns)?
        .build()?;
    Ok(Some(plan))
}

#[cfg(test)]
mod tests {
    // A test fails by panicking: each `expect` names the step that failed (building a
    // fixture, planning, running). None of this is compiled outside tests.
    use super::*;
    use crate::testing::{optimized, rows, session};
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;
    use std::sync::Arc;

    /// Parts, their offers by suppliers (several per part, some tied, a null part), and
    /// suppliers in two regions.
    fn context() -> SessionContext {
        let ctx = session();
        let ints = |name: &str, v: Vec<Option<i64>>| {
            (
                Field::new(name, DataType::Int64, true),
                Arc::new(Int64Array::from(v)) as arrow::array::ArrayRef,
            )
        };
        let table = |columns: Vec<(Field, arrow::array::ArrayRef)>| {
            let (fields, arrays): (Vec<_>, Vec<_>) = columns.into_iter().unzip();
            let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("batch");
            Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]]).expect("table"))
        };
        let n = 300;
        ctx.register_table(
            "part",
            table(vec![
                ints("p_key", (0..40).map(Some).chain([Some(7)]).collect()),
                ints(
                    "p_size",
                    (0..40).map(|i| Some(i % 3)).chain([Some(1)]).collect(),
                ),
            ]),
        )
        .expect("part");
        ctx.register_table(
            "offer",
            table(vec![
                ints(
                    "o_part",
                    (0..n).map(|i| (i % 17 != 5).then_some(i % 41)).collect(),
                ),
                ints("o_supp", (0..n).map(|i| Some(i % 23)).collect()),
                ints("o_cost", (0..n).map(|i| Some(i * 37 % 11)).collect()),
            ]),
        )
        .expect("offer");
        ctx.register_table(
            "supp",
            table(vec![
                ints("s_key", (0..23).map(Some).collect()),
                (
                    Field::new("s_region", DataType::Utf8, true),
                    Arc::new(StringArray::from_iter_values(
                        (0..23).map(|i| if i % 3 == 0 { "EU" } else { "US" }),
                    )),
                ),
            ]),
        )
        .expect("supp");
        ctx
    }

    /// Whether the optimized plan has a window and how many aggregations (subqueries'
    /// included).
    async fn shape(ctx: &SessionContext, sql: &str) -> (bool, usize) {
        let plan = optimized(ctx, sql).await;
        let (mut window, mut aggregates) = (false, 0);
        plan.apply_with_subqueries(|n| {
            window |= matches!(n, LogicalPlan::Window(_));
            aggregates += usize::from(matches!(n, LogicalPlan::Aggregate(_)));
            Ok(TreeNodeRecursion::Continue)
        })
        .expect("walk");
        (window, aggregates)
    }

    /// Answers with the rule and without it, and whether it applied.
    async fn both(sql: &str) -> (Vec<String>, Vec<String>, bool) {
        let ctx = context();
        let (applied, aggregates) = shape(&ctx, sql).await;
        assert!(!applied || aggregates == 0, "no aggregation left: {sql}");
        let with = rows(&ctx, sql).await;
        rows(&ctx, "SET tarn.subquery_as_window = false").await;
        assert!(!shape(&ctx, sql).await.0, "the setting turns it off");
        let without = rows(&ctx, sql).await;
        (with, without, applied)
    }

    #[tokio::test]
    async fn the_cheapest_offer_per_part_is_a_window_and_stays_exact() {
        // TPC-H Q2's shape: the subquery joins the outer query's tables but `part`, under
        // other aliases; a part key is listed twice.
        let sql = "SELECT p.p_key, o.o_supp, o.o_cost FROM part p, offer o, supp s \
                   WHERE p.p_key = o.o_part AND o.o_supp = s.s_key AND s.s_region = 'EU' \
                     AND p.p_size = 1 AND o.o_cost = (SELECT min(o2.o_cost) FROM offer o2, \
                     supp s2 WHERE p.p_key = o2.o_part AND s2.s_key = o2.o_supp \
                     AND s2.s_region = 'EU') \
                   ORDER BY 1, 2, 3";
        let (with, without, applied) = both(sql).await;
        assert!(applied, "the subquery became a window");
        assert_eq!(with, without);
        assert!(with.len() > 10, "{with:?}");
    }

    #[tokio::test]
    async fn the_latest_row_per_key_is_a_window_and_keeps_null_keys_out() {
        let sql = "SELECT o_part, o_supp, o_cost FROM offer o \
                   WHERE o_cost = (SELECT max(o_cost) FROM offer o2 WHERE o2.o_part = o.o_part) \
                   ORDER BY 1, 2, 3";
        let (with, without, applied) = both(sql).await;
        assert!(applied, "the subquery became a window");
        assert_eq!(with, without);
        // Offers with no part match no subquery row: none is listed, with or without.
        let parts: Vec<&str> = with
            .iter()
            .filter(|l| l.starts_with("| ") && !l.contains("o_part"))
            .filter_map(|l| l.split('|').nth(1))
            .map(str::trim)
            .collect();
        assert!(parts.len() > 20, "{with:?}");
        assert!(
            parts.iter().all(|p| !p.is_empty()),
            "no null part: {with:?}"
        );
    }

    #[tokio::test]
    async fn a_subquery_over_other_rows_is_left_alone() {
        for sql in [
            // The subquery reads suppliers of every region; the outer query, Europe's.
            "SELECT p.p_key, o.o_cost FROM part p, offer o, supp s \
             WHERE p.p_key = o.o_part AND o.o_supp = s.s_key AND s.s_region = 'EU' \
               AND o.o_cost = (SELECT min(o2.o_cost) FROM offer o2, supp s2 \
                               WHERE p.p_key = o2.o_part AND s2.s_key = o2.o_supp) \
             ORDER BY 1, 2",
            // An average changes with repetition.
            "SELECT o_part, o_cost FROM offer o \
             WHERE o_cost > (SELECT avg(o_cost) FROM offer o2 WHERE o2.o_part = o.o_part) \
             ORDER BY 1, 2",
            // The outer query joins suppliers on something other than the part.
            "SELECT o.o_part, o.o_cost FROM offer o, supp s WHERE o.o_cost = s.s_key \
               AND o.o_cost = (SELECT min(o2.o_cost) FROM offer o2 WHERE o2.o_part = o.o_part) \
             ORDER BY 1, 2",
        ] {
            let (with, without, applied) = both(sql).await;
            assert!(!applied, "left alone: {sql}");
            assert_eq!(with, without, "{sql}");
            assert!(with.len() > 4, "{sql}: {with:?}");
        }
    }
    /// Answers with the rule and without it, and whether the total became a window over
    /// the one aggregation left.
    async fn totalled(sql: &str) -> (Vec<String>, Vec<String>, bool) {
        let ctx = context();
        let (window, aggregates) = shape(&ctx, sql).await;
        let applied = window && aggregates == 1;
        let with = rows(&ctx, sql).await;
        rows(&ctx, "SET tarn.subquery_as_window = false").await;
        assert_eq!(
            shape(&ctx, sql).await,
            (false, 2),
            "the setting turns it off"
        );
        let without = rows(&ctx, sql).await;
        (with, without, applied)
    }

    #[tokio::test]
    async fn a_total_of_the_query_s_own_groups_is_a_window_and_stays_exact() {
        for sql in [
            // TPC-H Q11's shape: the parts whose value is a share of the region's total.
            "SELECT o_part, sum(o_cost * o_supp) AS v FROM offer, supp \
             WHERE o_supp = s_key AND s_region = 'EU' GROUP BY o_part \
             HAVING sum(o_cost * o_supp) > (SELECT sum(o_cost * o_supp) * 0.03 \
               FROM offer, supp WHERE o_supp = s_key AND s_region = 'EU') ORDER BY 1",
            // Other aliases, a maximum, and decimals.
            "SELECT o.o_part, max(o.o_cost) AS top, sum(CAST(o.o_cost AS DECIMAL(10, 2))) \
             FROM offer o, supp s WHERE s.s_key = o.o_supp AND s.s_region = 'US' \
             GROUP BY o.o_part HAVING max(o.o_cost) >= (SELECT max(o2.o_cost) - 3 \
               FROM supp s2, offer o2 WHERE o2.o_supp = s2.s_key AND s2.s_region = 'US') \
             ORDER BY 1",
        ] {
            let (with, without, applied) = totalled(sql).await;
            assert!(applied, "the total became a window: {sql}");
            assert_eq!(with, without, "{sql}");
            assert!(with.len() > 6, "{sql}: {with:?}");
        }
    }

    #[tokio::test]
    async fn a_total_over_other_rows_or_of_floats_is_left_alone() {
        for sql in [
            // The subquery totals every region's offers.
            "SELECT o_part, sum(o_cost) FROM offer, supp WHERE o_supp = s_key \
             AND s_region = 'EU' GROUP BY o_part HAVING sum(o_cost) > \
             (SELECT sum(o_cost) * 0.01 FROM offer, supp WHERE o_supp = s_key) ORDER BY 1",
            // The subquery reads the offers alone.
            "SELECT o_part, sum(o_cost) FROM offer, supp WHERE o_supp = s_key \
             AND s_region = 'EU' GROUP BY o_part HAVING sum(o_cost) > \
             (SELECT sum(o_cost) * 0.01 FROM offer) ORDER BY 1",
            // Grouping sets count each offer once per set.
            "SELECT o_part, o_supp, sum(o_cost) FROM offer GROUP BY ROLLUP (o_part, o_supp) \
             HAVING sum(o_cost) > (SELECT sum(o_cost) * 0.01 FROM offer) ORDER BY 1, 2",
            // A sum of floats depends on the order of addition.
            "SELECT o_part, sum(CAST(o_cost AS DOUBLE)) FROM offer GROUP BY o_part \
             HAVING sum(CAST(o_cost AS DOUBLE)) > \
             (SELECT sum(CAST(o_cost AS DOUBLE)) * 0.02 FROM offer) ORDER BY 1",
        ] {
            let (with, without, applied) = totalled(sql).await;
            assert!(!applied, "left alone: {sql}");
            assert_eq!(with, without, "{sql}");
            assert!(with.len() > 6, "{sql}: {with:?}");
        }
    }
}
