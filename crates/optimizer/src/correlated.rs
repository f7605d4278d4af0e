//! A subquery correlated through two inner columns of the same name (`r3.sale_id` and
//! `r4.sale_id`) keeps them apart when it becomes a join.
//!
//! DataFusion turns `EXISTS`, `IN` and scalar subqueries into joins by lifting their
//! correlated conditions into the join's filter, where each inner column is renamed to
//! `__correlated_sq_N.<name>`: by its name alone. Two inner columns of one name became
//! the same column, so
//!
//! ```sql
//! WHERE EXISTS (SELECT 1 FROM returns r3 LEFT JOIN returns r4 ON r3.rqty = r4.rqty
//!               WHERE r3.sale_id = s.sale_id AND r4.sale_id <> s.qty)
//! ```
//!
//! compared `r3.sale_id` with `s.qty` (and dropped the join to `r4`): more rows than SQL
//! gives. With columns of different types the plan failed instead ("Int32 < Int64").
//!
//! This rule, which runs before DataFusion decorrelates subqueries, gives every inner
//! column that a correlated condition or the subquery's output uses a name of its own
//! within the subquery: the relation that brings it (a table or an alias) is wrapped in a
//! projection that renames it, and every reference above follows. The answer does not
//! change; only names inside the subquery do.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, Result, TableReference};
use datafusion::logical_expr::expr::{Exists, InSubquery};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    Expr, LogicalPlan, LogicalPlanBuilder, Operator, Projection, Subquery, SubqueryAlias,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The rule; see the module documentation.
#[derive(Debug, Default)]
pub struct DistinctCorrelatedNames;

impl OptimizerRule for DistinctCorrelatedNames {
    fn name(&self) -> &str {
        "tarn_distinct_correlated_names"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        plan.transform_up_with_subqueries(|node| {
            node.map_expressions(|e| {
                e.transform_up(|e| match e {
                    Expr::Exists(Exists { subquery, negated }) => Ok(renamed(subquery)?
                        .update_data(|subquery| Expr::Exists(Exists { subquery, negated }))),
                    Expr::InSubquery(InSubquery {
                        expr,
                        subquery,
                        negated,
                    }) => Ok(renamed(subquery)?.update_data(|subquery| {
                        Expr::InSubquery(InSubquery {
                            expr,
                            subquery,
                            negated,
                        })
                    })),
                    // DataFusion turns a scalar subquery into a join only when it is
                    // correlated by equalities; tried again after other rules moved
                    // its conditions, it fails on renamed ones.
                    Expr::ScalarSubquery(subquery) if correlated_by_equalities(&subquery)? => {
                        Ok(renamed(subquery)?.update_data(Expr::ScalarSubquery))
                    }
                    other => Ok(Transformed::no(other)),
                })
            })
        })
    }
}

/// `subquery` with the inner columns that would share a name once decorrelated renamed.
fn renamed(subquery: Subquery) -> Result<Transformed<Subquery>> {
    let plan = subquery.subquery.as_ref();
    // A nested subquery may refer to these columns from inside; leave such plans alone.
    if subquery.outer_ref_columns.is_empty() || has_nested_subquery(plan)? {
        return Ok(Transformed::no(subquery));
    }
    let renames = clashing_columns(plan)?;
    if renames.is_empty() {
        return Ok(Transformed::no(subquery));
    }
    let Some(plan) = rename_columns(plan.clone(), &renames)? else {
        return Ok(Transformed::no(subquery));
    };
    Ok(Transformed::yes(Subquery {
        subquery: Arc::new(plan),
        ..subquery
    }))
}

/// Whether every correlated condition of `subquery` is an equality.
fn correlated_by_equalities(subquery: &Subquery) -> Result<bool> {
    let mut only_equalities = true;
    subquery.subquery.apply(|node| {
        if let LogicalPlan::Filter(filter) = node {
            only_equalities &= split_conjunction(&filter.predicate).iter().all(|c| {
                !c.contains_outer() || matches!(c, Expr::BinaryExpr(b) if b.op == Operator::Eq)
            });
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(only_equalities)
}

fn has_nested_subquery(plan: &LogicalPlan) -> Result<bool> {
    let mut found = false;
    plan.apply(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                if matches!(
                    e,
                    Expr::Exists(_) | Expr::InSubquery(_) | Expr::ScalarSubquery(_)
                ) {
                    found = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    Ok(found)
}

/// The inner columns the join will see (the subquery's output, then those of correlated
/// conditions) that share a name with one seen before, each with a new name.
fn clashing_columns(plan: &LogicalPlan) -> Result<HashMap<Column, String>> {
    let mut exposed: Vec<Column> = plan.schema().columns();
    plan.apply(|node| {
        if let LogicalPlan::Filter(filter) = node {
            for conjunct in split_conjunction(&filter.predicate) {
                if conjunct.contains_outer() {
                    let mut refs: Vec<&Column> = conjunct.column_refs().into_iter().collect();
                    refs.sort();
                    exposed.extend(refs.into_iter().cloned());
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let mut seen: HashMap<String, Column> = HashMap::new();
    let mut taken: HashSet<String> = exposed.iter().map(|c| c.name.clone()).collect();
    let mut renames = HashMap::new();
    for column in exposed {
        match seen.get(&column.name) {
            None => {
                seen.insert(column.name.clone(), column);
            }
            Some(first) if *first == column || renames.contains_key(&column) => {}
            Some(_) => {
                let mut n = renames.len() + 1;
                let mut name = format!("{}__{n}", column.name);
                while taken.contains(&name) {
                    n += 1;
                    name = format!("{}__{n}", column.name);
                }
                taken.insert(name.clone());
                renames.insert(column, name);
            }
        }
    }
    Ok(renames)
}

/// `plan` with each column of `renames` renamed where its relation (a table scan or an
/// alias) brings it, and in every reference above; `None` when a column's relation was
/// not found (the plan is then left as it was).
fn rename_columns(
    plan: LogicalPlan,
    renames: &HashMap<Column, String>,
) -> Result<Option<LogicalPlan>> {
    let mut wrapped: HashSet<&Column> = HashSet::new();
    let plan = plan
        .transform_up(|node| {
            let relation = match &node {
                LogicalPlan::SubqueryAlias(a) => Some(a.alias.clone()),
                LogicalPlan::TableScan(s) => Some(s.table_name.clone()),
                _ => None,
            };
            let here: Vec<&Column> = renames
                .keys()
                .filter(|c| {
                    c.relation.is_some()
                        && c.relation == relation
                        && node.schema().has_column(c)
                        && !wrapped.contains(c)
                })
                .collect();
            if let (Some(relation), false) = (relation, here.is_empty()) {
                wrapped.extend(here);
                return wrap_renaming(node, relation, renames).map(Transformed::yes);
            }
            let node = node.map_expressions(|e| {
                e.transform_up(|e| match e {
                    Expr::Column(c) => match renames.get(&c) {
                        Some(name) => Ok(Transformed::yes(Expr::Column(Column::new(
                            c.relation.clone(),
                            name,
                        )))),
                        None => Ok(Transformed::no(Expr::Column(c))),
                    },
                    other => Ok(Transformed::no(other)),
                })
            })?;
            Ok(Transformed::yes(node.data.recompute_schema()?))
        })?
        .data;
    Ok((wrapped.len() == renames.len()).then_some(plan))
}

/// `node` (which brings the columns of `relation`) under a projection that renames those
/// of `renames`, aliased as `relation` again.
fn wrap_renaming(
    node: LogicalPlan,
    relation: TableReference,
    renames: &HashMap<Column, String>,
) -> Result<LogicalPlan> {
    let input = match node {
        LogicalPlan::SubqueryAlias(SubqueryAlias { input, .. }) => input,
        scan => Arc::new(scan),
    };
    let exprs = input
        .schema()
        .iter()
        .map(|(qualifier, field)| {
            let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
            let own = Column::new(Some(relation.clone()), field.name());
            match renames.get(&own) {
                Some(name) => column.alias(name),
                None => column,
            }
        })
        .collect();
    let projection = Projection::try_new(exprs, input)?;
    LogicalPlanBuilder::from(LogicalPlan::Projection(projection))
        .alias(relation)?
        .build()
}
