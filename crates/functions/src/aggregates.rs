//! Presto's aggregates: `approx_percentile` (DataFusion's `approx_percentile_cont`,
//! t-digest, interpolated) and `arbitrary` (`any_value`) by name; `count_if`, `max_by`
//! and `min_by` are planned as DataFusion's own aggregates (`count` with a filter,
//! `first_value` ordered by the key, NULL keys left out) when the plan is simplified, so
//! they get DataFusion's grouped accumulators.

use arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};
use datafusion::functions_aggregate::{
    any_value::any_value_udaf, approx_percentile_cont::approx_percentile_cont_udaf,
    count::count_udaf, first_last::first_value_udaf,
};
use datafusion::logical_expr::expr::{AggregateFunction, Sort};
use datafusion::logical_expr::function::{AccumulatorArgs, AggregateFunctionSimplification};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Expr, Signature, Volatility,
};
use datafusion::prelude::lit;

/// The aggregates of this module.
pub fn functions() -> Vec<AggregateUDF> {
    vec![
        approx_percentile_cont_udaf()
            .as_ref()
            .clone()
            .with_aliases(["approx_percentile"]),
        any_value_udaf()
            .as_ref()
            .clone()
            .with_aliases(["arbitrary"]),
        AggregateUDF::new_from_impl(Rewritten::new(Kind::CountIf)),
        AggregateUDF::new_from_impl(Rewritten::new(Kind::MaxBy)),
        AggregateUDF::new_from_impl(Rewritten::new(Kind::MinBy)),
    ]
}

#[derive(Debug, PartialEq, Eq, Hash, Clone, Copy)]
enum Kind {
    CountIf,
    MaxBy,
    MinBy,
}

/// An aggregate that the simplifier replaces with DataFusion's own.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Rewritten {
    kind: Kind,
    signature: Signature,
}

impl Rewritten {
    fn new(kind: Kind) -> Self {
        let signature = match kind {
            Kind::CountIf => Signature::exact(vec![DataType::Boolean], Volatility::Immutable),
            Kind::MaxBy | Kind::MinBy => Signature::any(2, Volatility::Immutable),
        };
        Rewritten { kind, signature }
    }
}

/// `first` and, when there is one, the aggregate's own filter.
fn with_filter(first: Expr, filter: Option<Box<Expr>>) -> Option<Box<Expr>> {
    Some(Box::new(match filter {
        Some(f) => first.and(*f),
        None => first,
    }))
}

impl AggregateUDFImpl for Rewritten {
    fn name(&self) -> &str {
        match self.kind {
            Kind::CountIf => "count_if",
            Kind::MaxBy => "max_by",
            Kind::MinBy => "min_by",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, types: &[DataType]) -> Result<DataType> {
        match self.kind {
            Kind::CountIf => Ok(DataType::Int64),
            Kind::MaxBy | Kind::MinBy => types
                .first()
                .cloned()
                .ok_or_else(|| DataFusionError::Plan(format!("{} takes 2 arguments", self.name()))),
        }
    }

    fn accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Err(DataFusionError::NotImplemented(format!(
            "{} is planned as another aggregate and cannot run as a window function",
            self.name()
        )))
    }

    fn simplify(&self) -> Option<AggregateFunctionSimplification> {
        let kind = self.kind;
        Some(Box::new(move |aggregate: AggregateFunction, _| {
            let params = aggregate.params;
            let mut args = params.args.into_iter();
            let (Some(first), second) = (args.next(), args.next()) else {
                return Err(DataFusionError::Plan("missing argument".into()));
            };
            Ok(match (kind, second) {
                (Kind::CountIf, _) => Expr::AggregateFunction(AggregateFunction::new_udf(
                    count_udaf(),
                    vec![lit(1)],
                    false,
                    with_filter(first.is_true(), params.filter),
                    vec![],
                    None,
                )),
                (Kind::MaxBy | Kind::MinBy, Some(key)) => {
                    let ascending = kind == Kind::MinBy;
                    Expr::AggregateFunction(AggregateFunction::new_udf(
                        first_value_udaf(),
                        vec![first],
                        false,
                        with_filter(key.clone().is_not_null(), params.filter),
                        vec![Sort::new(key, ascending, false)],
                        None,
                    ))
                }
                (_, None) => {
                    return Err(DataFusionError::Plan("missing argument".into()));
                }
            })
        }))
    }
}
