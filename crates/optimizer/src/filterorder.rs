//! The conditions of a filter evaluated most selective first, as estimated from the
//! catalog's column ranges.
//!
//! DataFusion evaluates `a AND b AND c` left to right, and once the conditions so far keep
//! at most a fifth of a batch's rows, it evaluates the next one on those rows only. So
//! the order the query wrote its conditions in decides how many rows each is evaluated
//! on: TPC-H Q12 names `l_shipmode IN (…)` (a string comparison keeping 2 rows in 7)
//! before the year of `l_receiptdate` (1 in 7), and evaluating the year first took a
//! quarter off the query.
//!
//! This rule runs after DataFusion's physical optimizer. In each filter it estimates, for
//! the conditions that compare columns with columns or constants (possibly combined with
//! `AND` / `OR`), the share of rows they keep, from the input's column ranges (DataFusion's
//! interval analysis, the one its own row estimates use). Those conditions go first,
//! each next one the one that keeps the fewest rows together with those before it, as long
//! as they keep at most half the rows; the other conditions follow in the order written.
//! Only comparisons are moved ahead, and a comparison of columns and constants cannot
//! fail, so no condition is evaluated on a row where it could raise an error it did not
//! raise before.
//! `--datafusion-config tarn.order_filter_conditions=false` turns the rule off.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, Statistics};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_expr::intervals::utils::check_support;
use datafusion::physical_expr::{
    AnalysisContext, PhysicalExpr, analyze, conjunction, split_conjunction,
};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::{ExecutionPlan, StatisticsArgs, StatisticsContext};

use super::TarnOptions;

/// Estimated conditions go first while, together, they keep at most this share of rows.
const AHEAD_BELOW: f64 = 0.5;

/// The rule; see the module documentation.
#[derive(Debug, Default)]
pub struct OrderFilterConditions;

impl PhysicalOptimizerRule for OrderFilterConditions {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !TarnOptions::get(config, |o| o.order_filter_conditions) {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            let Some(filter) = node.downcast_ref::<FilterExec>() else {
                return Ok(Transformed::no(node));
            };
            let stats = StatisticsContext::new()
                .compute(filter.input().as_ref(), &StatisticsArgs::new())?;
            match reorder(filter.predicate(), &filter.input().schema(), &stats)? {
                Some(predicate) => {
                    let rebuilt = FilterExecBuilder::from(filter)
                        .with_predicate(predicate)
                        .build()?;
                    Ok(Transformed::yes(Arc::new(rebuilt) as _))
                }
                None => Ok(Transformed::no(node)),
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "tarn_order_filter_conditions"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `predicate`'s conditions in the order described in the module documentation, or `None`
/// when that is the order they are in.
fn reorder(
    predicate: &Arc<dyn PhysicalExpr>,
    schema: &arrow::datatypes::SchemaRef,
    stats: &Statistics,
) -> Result<Option<Arc<dyn PhysicalExpr>>> {
    let conditions: Vec<Arc<dyn PhysicalExpr>> = split_conjunction(predicate)
        .into_iter()
        .map(Arc::clone)
        .collect();
    if conditions.len() < 2 {
        return Ok(None);
    }
    let keeps = |exprs: &[&Arc<dyn PhysicalExpr>]| -> Option<f64> {
        let expr = conjunction(exprs.iter().map(|e| Arc::clone(e)));
        let context =
            AnalysisContext::try_from_statistics(schema, &stats.column_statistics).ok()?;
        analyze(&expr, context, schema).ok()?.selectivity
    };
    let mut estimated: Vec<usize> = (0..conditions.len())
        .filter(|i| {
            let c = &conditions[*i];
            comparison(c) && check_support(c, schema) && keeps(&[c]).is_some()
        })
        .collect();
    // Greedily: the estimated condition that keeps the fewest rows with those chosen.
    let mut ahead: Vec<usize> = Vec::new();
    let mut kept = 1.0;
    while !estimated.is_empty() {
        let best = estimated
            .iter()
            .enumerate()
            .filter_map(|(slot, i)| {
                let mut exprs: Vec<&Arc<dyn PhysicalExpr>> =
                    ahead.iter().map(|a| &conditions[*a]).collect();
                exprs.push(&conditions[*i]);
                keeps(&exprs).map(|k| (slot, k))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((slot, k)) if k <= AHEAD_BELOW && k < kept => {
                ahead.push(estimated.remove(slot));
                kept = k;
            }
            _ => break,
        }
    }
    if ahead.is_empty() {
        return Ok(None);
    }
    // Then every other condition, in the order written.
    let rest = (0..conditions.len()).filter(|i| !ahead.contains(i));
    let order: Vec<usize> = ahead.iter().copied().chain(rest).collect();
    if order.iter().copied().eq(0..conditions.len()) {
        return Ok(None);
    }
    Ok(Some(conjunction(
        order.into_iter().map(|i| Arc::clone(&conditions[i])),
    )))
}

/// A comparison of columns and constants, or `AND` / `OR` of such: nothing that can fail.
fn comparison(expr: &Arc<dyn PhysicalExpr>) -> bool {
    let Some(binary) = expr.downcast_ref::<BinaryExpr>() else {
        return false;
    };
    let operand = |e: &Arc<dyn PhysicalExpr>| e.is::<Column>() || e.is::<Literal>();
    match binary.op() {
        Operator::And | Operator::Or => comparison(binary.left()) && comparison(binary.right()),
        Operator::Eq
        | Operator::NotEq
        | Operator::Lt
        | Operator::LtEq
        | Operator::Gt
        | Operator::GtEq => operand(binary.left()) && operand(binary.right()),
        _ => false,
    }
}
