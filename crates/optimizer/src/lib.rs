//! Tarn's query planner rules, on DataFusion alone: logical optimizer rules (join order,
//! semi-join placement, subqueries as windows, null-aware `IN`, eager aggregation, shared
//! averages), physical optimizer rules (filter estimates, one-phase aggregation, filter
//! condition order and narrowing, probe-side key filters, guards), and a query planner
//! that plans a subquery named twice once and speeds up decimal arithmetic and `LIKE`.
//!
//! Each rule lives in its own module, names the class of queries it helps, and is
//! switched by one of [`TarnOptions`]' settings (`tarn.<name>`), which the differential
//! query generator (`scripts/fuzz`) turns on and off against DuckDB. [`register`] adds
//! them all to a session.

pub mod avg;
pub mod codec;
mod correlated;
mod decimal;
mod dependencies;
mod eager;
mod filterorder;
mod filterstats;
mod guard;
mod joinorder;
mod keyfilter;
mod like;
mod narrow;
mod notin;
mod nullsafe;
mod onephase;
mod outerjoin;
mod pushdown;
mod semijoin;
mod shared;
#[cfg(test)]
mod testing;
mod window;

use std::sync::Arc;

use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SessionStateBuilder;
#[cfg(test)]
use datafusion::prelude::SessionConfig;

pub use codec::TarnCodec;
pub use shared::{TarnQueryPlanner, unshare_subplans};

datafusion::common::extensions_options! {
    /// Tarn's own planner settings, given like DataFusion's:
    /// `--datafusion-config tarn.reorder_joins=false`.
    pub struct TarnOptions {
        /// Order inner joins by the catalog's statistics; false keeps the order the query
        /// names its tables in.
        pub reorder_joins: bool, default = true
        /// Compute a subquery the query names more than once (an aggregation) once; false
        /// computes it wherever it is named.
        pub share_subplans: bool, default = true
        /// Add, subtract and multiply decimals without a per-value overflow check where
        /// a batch's values prove nothing overflows; false checks every value.
        pub decimal_fast_path: bool, default = true
        /// Evaluate `LIKE '%a%b%'` (parts in order) by searching for each part after the
        /// one before; false leaves it to a regular expression.
        pub like_parts: bool, default = true
        /// Aggregate in one phase where the files hold disjoint ranges of a grouping
        /// column; false always aggregates in two phases.
        pub one_phase_aggregates: bool, default = true
        /// Evaluate a filter's conditions most selective first where the column ranges
        /// estimate it; false evaluates them in the order written.
        pub order_filter_conditions: bool, default = true
        /// Evaluate each of a filter's conditions on the rows the ones before it kept;
        /// false leaves it to DataFusion's `AND`.
        pub narrow_filter_conditions: bool, default = true
        /// Estimate the rows a filter keeps from the catalog's distinct counts where
        /// DataFusion's range analysis cannot; false keeps DataFusion's fixed share.
        pub estimate_filters: bool, default = true
        /// Aggregate the facts before joining the unfiltered dimension tables a query
        /// groups by; false joins first.
        pub aggregate_before_joins: bool, default = true
        /// Take a correlated minimum or maximum over the query's own join, or an
        /// uncorrelated total of the rows the query groups, as a window over the query's
        /// own rows; false computes the subquery on its own.
        pub subquery_as_window: bool, default = true
        /// Compute a decimal average from the sum and count the query also takes, where
        /// that saves accumulators; false keeps every average's own.
        pub avg_from_sums: bool, default = true
        /// Drop a hash join's probe rows whose key is not among the build side's keys
        /// before the join looks them up; false probes every row.
        pub probe_key_filter: bool, default = true
        /// Move a semi join (`IN`, `EXISTS`) below the inner joins to the table whose keys
        /// it filters; false keeps it where decorrelation put it.
        pub push_semi_joins_down: bool, default = true
        /// Aggregate only the groups a join keeps, where an aggregation is joined on its
        /// grouping keys; false aggregates every group first.
        pub reduce_joined_aggregates: bool, default = true
    }
}

impl datafusion::common::config::ConfigExtension for TarnOptions {
    const PREFIX: &'static str = "tarn";
}

impl TarnOptions {
    /// The setting `pick` reads from `config` (its default where Tarn's options are absent).
    pub fn get(
        config: &datafusion::common::config::ConfigOptions,
        pick: impl FnOnce(&TarnOptions) -> bool,
    ) -> bool {
        config.extensions.get::<TarnOptions>().is_none_or(pick)
    }
}

/// `plan` as `rewrite` gives it, or unchanged where it gives nothing: an optimizer rule
/// that applies to a node or leaves it alone.
pub(crate) fn replaced(
    plan: datafusion::logical_expr::LogicalPlan,
    rewrite: impl FnOnce(
        &datafusion::logical_expr::LogicalPlan,
    )
        -> datafusion::common::Result<Option<datafusion::logical_expr::LogicalPlan>>,
) -> datafusion::common::Result<
    datafusion::common::tree_node::Transformed<datafusion::logical_expr::LogicalPlan>,
> {
    use datafusion::common::tree_node::Transformed;
    Ok(match rewrite(&plan)? {
        Some(rewritten) => Transformed::yes(rewritten),
        None => Transformed::no(plan),
    })
}

/// The one input of a plan node of Tarn's that takes one, from the children DataFusion
/// replaces its own with; `node` names it in the error.
pub(crate) fn one_input(
    mut children: Vec<Arc<dyn datafusion::physical_plan::ExecutionPlan>>,
    node: &str,
) -> DfResult<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
    match (children.pop(), children.is_empty()) {
        (Some(input), true) => Ok(input),
        _ => Err(DataFusionError::Internal(format!("{node} takes one input"))),
    }
}

/// The statistics of a plan node that has its one input's: the input's, or unknown where
/// DataFusion gives none.
pub(crate) fn input_statistics(
    input_stats: &[Arc<datafusion::common::Statistics>],
    schema: &arrow::datatypes::SchemaRef,
) -> Arc<datafusion::common::Statistics> {
    match input_stats {
        [input] => Arc::clone(input),
        _ => Arc::new(datafusion::common::Statistics::new_unknown(schema)),
    }
}

/// DataFusion's optimizer rules with Tarn's own: semi joins are moved below the inner
/// joins they filter once decorrelation and the join rewrites have made them, before
/// filters are pushed down; once filters are in place, a correlated minimum over the
/// query's own join becomes a window, an aggregation joined on a grouping column is
/// reduced to the groups the join keeps, inner joins are ordered by the catalog's
/// statistics, and facts are aggregated before the dimensions they are grouped by.
pub fn optimizer_rules() -> Vec<Arc<dyn datafusion::optimizer::OptimizerRule + Send + Sync>> {
    let mut rules = datafusion::optimizer::Optimizer::new().rules;
    // Trees of inner joins keep the order chosen for them (see the rule).
    for rule in &mut rules {
        match rule.name() {
            "eliminate_cross_join" => *rule = Arc::new(joinorder::EliminateCrossJoins::default()),
            // `=` keys beside null-safe ones stay exact (see the rule).
            "extract_equijoin_predicate" => {
                *rule = Arc::new(nullsafe::ExtractEquijoinKeys::default())
            }
            _ => {}
        }
    }
    let at = rules
        .iter()
        .position(|r| r.name() == "push_down_limit")
        .unwrap_or(rules.len());
    rules.insert(at, Arc::new(semijoin::PushSemiJoinDown));
    let at = rules
        .iter()
        .position(|r| r.name() == "push_down_filter")
        .map_or(rules.len(), |i| i + 1);
    // A correlated minimum over the query's own join becomes a window, before the
    // subquery's aggregation is reduced to the keys the join keeps.
    rules.insert(at, Arc::new(window::SubqueryAsWindow));
    rules.insert(at + 1, Arc::new(window::TotalAsWindow));
    rules.insert(at + 2, Arc::new(semijoin::ReduceJoinedAggregate));
    // Join order is chosen once the filters sit on the tables they narrow.
    rules.insert(at + 3, Arc::new(joinorder::ReorderJoins));
    // Then an aggregation by dimensions' columns aggregates the facts first.
    rules.insert(at + 4, Arc::new(eager::AggregateBeforeJoins));
    // Averages share sums and counts once the aggregations are where they will run.
    let at = rules
        .iter()
        .position(|r| r.name() == "common_sub_expression_eliminate")
        .unwrap_or(rules.len());
    rules.insert(at, Arc::new(avg::AvgFromSums));
    // IN subqueries are made three-valued before they become mark joins.
    if let Some(at) = rules
        .iter()
        .position(|r| r.name() == "decorrelate_predicate_subquery")
    {
        rules.insert(at, Arc::new(notin::NullAwareIn));
        // Inner columns of one name stay apart when subqueries become joins.
        rules.insert(at + 1, Arc::new(correlated::DistinctCorrelatedNames));
    }
    // The rules that trust functional dependencies get only those that hold.
    for before in ["eliminate_duplicated_expr", "optimize_projections"] {
        if let Some(at) = rules.iter().position(|r| r.name() == before) {
            rules.insert(
                at,
                Arc::new(dependencies::SoundDependencies::before(before)),
            );
        }
    }
    rules
}

/// DataFusion's physical optimizer rules with Tarn's own: filters' row estimates from the
/// catalog's distinct counts before DataFusion picks join sides; after all of DataFusion's,
/// one-phase aggregation over disjoint files, then the order and narrowing of filters'
/// conditions.
pub fn physical_optimizer_rules()
-> Vec<Arc<dyn datafusion::physical_optimizer::PhysicalOptimizerRule + Send + Sync>> {
    let mut rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
    // Before anything reads equivalences: outer joins' NULL-extended sides claim no constants.
    rules.insert(0, Arc::new(outerjoin::OuterJoinConstants));
    // Before projections move into scans: CASE WHEN conditions' guards protect their branch.
    rules.insert(1, Arc::new(guard::GuardCaseConditions));
    // Filters pushed through projections land on the columns they name (both phases).
    for rule in &mut rules {
        let phase = match rule.name() {
            "FilterPushdown" => Some(datafusion::physical_optimizer::filter_pushdown::FilterPushdown::new()),
            "FilterPushdown(Post)" => {
                Some(datafusion::physical_optimizer::filter_pushdown::FilterPushdown::new_post_optimization())
            }
            _ => None,
        };
        if let Some(inner) = phase {
            *rule = Arc::new(pushdown::PositionalFilterPushdown::new(inner));
        }
    }
    let at = rules
        .iter()
        .position(|r| r.name() == "join_selection")
        .unwrap_or(0);
    rules.insert(at, Arc::new(filterstats::EstimateFilters));
    rules.push(Arc::new(onephase::OnePhaseAggregate));
    rules.push(Arc::new(filterorder::OrderFilterConditions));
    rules.push(Arc::new(narrow::NarrowFilterConditions));
    rules.push(Arc::new(keyfilter::ProbeKeyFilter));
    // Last: every filter's and join condition's guards protect what they guard.
    rules.push(Arc::new(guard::GuardConditions));
    rules
}

/// `builder` with Tarn's rules and planner: `extra` logical rules run first (before any
/// of DataFusion's), then DataFusion's and Tarn's (see [`optimizer_rules`] and
/// [`physical_optimizer_rules`]); the analyzer shares a subplan a query names twice.
pub fn register(
    builder: SessionStateBuilder,
    extra: Vec<Arc<dyn datafusion::optimizer::OptimizerRule + Send + Sync>>,
    planner: Arc<dyn datafusion::execution::context::QueryPlanner + Send + Sync>,
) -> SessionStateBuilder {
    let mut rules = extra;
    rules.extend(optimizer_rules());
    builder
        .with_optimizer_rules(rules)
        .with_analyzer_rule(Arc::new(shared::ShareRepeatedSubplans))
        .with_query_planner(planner)
        .with_physical_optimizer_rules(physical_optimizer_rules())
}

/// A session state for tests of Tarn's planner pieces: DataFusion's defaults with `partitions`
/// target partitions, Tarn's settings as `set` leaves them, and Tarn's query planner.
#[cfg(test)]
pub(crate) fn test_state(
    partitions: usize,
    set: impl FnOnce(&mut TarnOptions),
) -> SessionStateBuilder {
    let mut options = TarnOptions::default();
    set(&mut options);
    let config = SessionConfig::new()
        .with_target_partitions(partitions)
        .with_option_extension(options);
    SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_query_planner(Arc::new(shared::TarnQueryPlanner))
        .with_physical_optimizer_rules(physical_optimizer_rules())
}
