//! The coordinator's planner: Tarn's plan, spread over the workers by
//! datafusion-distributed where it pays and where it is safe, else run here.
//!
//! A query is planned for distribution when the tables it scans hold at least
//! [`ClusterOptions::min_bytes`] (by the catalog's file sizes). For those:
//! - shared subplans are computed wherever they are named (copies in different processes
//!   cannot share one computation);
//! - the probe key filter (its build and probe sides share a key set in memory),
//!   one-phase aggregation (it relies on whole files staying in one partition, which the
//!   distributed planner's splitting of scans does not keep) and the narrowing of filter
//!   conditions (an expression of Tarn's, see below) are off;
//! - the plan is kept only if every stage that runs on a worker survives serialization
//!   both ways (Tarn's codec, DataFusion's, a worker's function registry): a plan holding
//!   a node a worker cannot run (a Delta scan with deletion vectors, an in-memory system
//!   table, a scalar subquery's results container) runs here instead, with every rule.
//!   So do plans with a guarded condition (`x <> 0 AND 8 % x = 0`): its lazy `AND`/`OR`
//!   is an expression of Tarn's, and datafusion-distributed's codec (DataFusion's
//!   `ComposedPhysicalExtensionCodec`) does not pass expressions on to a user's codec.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SessionState, SessionStateBuilder, TaskContext};
use datafusion::logical_expr::{
    Explain, LogicalPlan, PlanType, StringifiedPlan, ToStringifiedPlan,
};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::sanity_checker::SanityCheckPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::explain::ExplainExec;
use datafusion_distributed::{
    DistributedCodec, DistributedExec, DistributedExt, DistributedLeafExec, NetworkBoundaryExt,
    SessionStateBuilderExt,
};
use datafusion_proto::bytes::{
    physical_plan_from_bytes_with_proto_converter, physical_plan_to_bytes_with_proto_converter,
};
use datafusion_proto::physical_plan::DeduplicatingProtoConverter;
use tarn_optimizer::{TarnCodec, TarnOptions};

use crate::channels::TokenChannels;
use crate::workers::WorkerList;

/// The coordinator's settings.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// A query is planned for distribution when its scans read at least this many bytes
    /// (by the catalog's file sizes); smaller ones run here.
    pub min_bytes: u64,
    /// Bytes of files per scan partition on a worker (datafusion-distributed's
    /// `file_scan_config_bytes_per_partition`); `None`: its default.
    pub bytes_per_partition: Option<usize>,
    /// The shared secret workers require (`None`: workers without authentication).
    pub token: Option<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            min_bytes: 256 * 1024 * 1024,
            bytes_per_partition: None,
            token: None,
        }
    }
}

/// The coordinator: the engine's session extended with datafusion-distributed's planner,
/// behind [`ChoosingPlanner`].
#[derive(Debug)]
pub struct Coordinator {
    workers: WorkerList,
    options: ClusterOptions,
}

impl Coordinator {
    /// A coordinator spreading queries over `workers`.
    pub fn new(workers: WorkerList, options: ClusterOptions) -> Self {
        Self { workers, options }
    }
}

impl tarn_lake::engine::SessionExtension for Coordinator {
    fn extend(&self, builder: SessionStateBuilder) -> tarn_lake::Result<SessionStateBuilder> {
        self.extend_builder(builder)
            .map_err(|e| tarn_lake::Error::InvalidArgument(format!("distributed planner: {e}")))
    }
}

impl Coordinator {
    fn extend_builder(&self, mut builder: SessionStateBuilder) -> Result<SessionStateBuilder> {
        let local = builder.query_planner().clone().ok_or_else(|| {
            DataFusionError::Internal("the engine's session has no query planner".into())
        })?;
        let options = builder
            .config()
            .as_ref()
            .and_then(|c| c.options().extensions.get::<TarnOptions>().cloned())
            .unwrap_or_default();
        let mut builder = builder
            .with_distributed_planner()
            .with_distributed_worker_resolver(self.workers.clone())
            .with_distributed_channel_resolver(TokenChannels::new(self.options.token.clone()))
            .with_distributed_user_codec(TarnCodec)
            .with_distributed_option_extension(options);
        if let Some(bytes) = self.options.bytes_per_partition {
            builder = builder.with_distributed_file_scan_config_bytes_per_partition(bytes)?;
        }
        // datafusion-distributed turns DataFusion's physical scalar subqueries off (their
        // results container cannot be split from the filter reading it); Tarn keeps them
        // (the old way gives wrong answers for subqueries of several rows) and keeps such
        // plans here: they fail the serialization check below.
        if let Some(config) = builder.config() {
            config
                .options_mut()
                .optimizer
                .enable_physical_uncorrelated_scalar_subquery = true;
        }
        let distributed = builder.query_planner().clone().ok_or_else(|| {
            DataFusionError::Internal("the distributed planner is missing".into())
        })?;
        Ok(builder.with_query_planner(Arc::new(ChoosingPlanner {
            local,
            distributed,
            min_bytes: self.options.min_bytes,
            worker_functions: Arc::new(crate::worker::function_registry()?),
        })))
    }
}

/// Plans a query for the workers where it pays and is safe, else here (see the module
/// documentation).
struct ChoosingPlanner {
    local: Arc<dyn QueryPlanner + Send + Sync>,
    distributed: Arc<dyn QueryPlanner + Send + Sync>,
    min_bytes: u64,
    /// A session with the functions a worker knows, to check that stages decode there.
    worker_functions: Arc<SessionState>,
}

impl std::fmt::Debug for ChoosingPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChoosingPlanner")
            .field("min_bytes", &self.min_bytes)
            .finish()
    }
}

#[async_trait]
impl QueryPlanner for ChoosingPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(state) = session_state.as_any().downcast_ref::<SessionState>() else {
            return self
                .local
                .create_physical_plan(logical_plan, session_state)
                .await;
        };
        let chosen = match logical_plan {
            LogicalPlan::Explain(explain) => self
                .choose(&explain.plan, state)
                .await
                .map(|plan| explained(explain, &plan)),
            _ => self.choose(logical_plan, state).await,
        };
        match chosen {
            Some(plan) => Ok(plan),
            None => {
                self.local
                    .create_physical_plan(logical_plan, session_state)
                    .await
            }
        }
    }
}

impl ChoosingPlanner {
    /// The distributed plan of `logical_plan`, where it reads enough to be worth it and
    /// can be sent; `None` to plan it here.
    async fn choose(
        &self,
        logical_plan: &LogicalPlan,
        state: &SessionState,
    ) -> Option<Arc<dyn ExecutionPlan>> {
        let bytes = scanned_bytes(logical_plan);
        if bytes < self.min_bytes {
            return None;
        }
        match self.try_distributed(logical_plan, state).await {
            Ok(Some(plan)) => Some(plan),
            Ok(None) => {
                tracing::info!(bytes, "no stage worth distributing: running here");
                None
            }
            Err(e) => {
                tracing::info!(
                    bytes,
                    reason = %e.strip_backtrace(),
                    "query runs on the coordinator: its plan cannot be sent to workers"
                );
                None
            }
        }
    }

    /// The distributed plan of `logical_plan`, `None` where no stage is worth sending, or
    /// why it cannot be sent.
    async fn try_distributed(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &SessionState,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let mut state = session_state.clone();
        let (unshared, changed) = tarn_optimizer::unshare_subplans(logical_plan)?;
        let plan = if changed {
            state.optimizer().optimize(unshared, &state, |_, _| {})?
        } else {
            unshared
        };
        if let Some(options) = state
            .config_mut()
            .options_mut()
            .extensions
            .get_mut::<TarnOptions>()
        {
            options.probe_key_filter = false;
            options.one_phase_aggregates = false;
            // Tarn's narrowing conjunction is an expression of its own, and the codec that
            // datafusion-distributed composes passes no expression to a codec of Tarn's.
            options.narrow_filter_conditions = false;
        }
        let physical = self.distributed.create_physical_plan(&plan, &state).await?;
        // `EXPLAIN ANALYZE`'s plan has the distributed query under its analyze node, which
        // gathers each worker's metrics (rows, bytes over the network) after the run.
        if !physical.exists(|node| Ok(node.downcast_ref::<DistributedExec>().is_some()))? {
            return Ok(None);
        }
        // A worker's functions, over this process's stores (decoding a scan looks its
        // store up).
        let task = TaskContext::from(self.worker_functions.as_ref())
            .with_runtime(Arc::clone(state.runtime_env()));
        check_stages(&physical, &state, &task)?;
        Ok(Some(physical))
    }
}

/// `EXPLAIN`'s answer for a distributed plan: the logical plans, then the physical plan
/// drawn by stage (`┌───── Stage 1 ── tasks=2 …`) with each task's files.
fn explained(explain: &Explain, plan: &Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    let mut plans = explain.stringified_plans.clone();
    plans.push(explain.plan.to_stringified(PlanType::FinalLogicalPlan));
    plans.push(StringifiedPlan::new(
        PlanType::FinalPhysicalPlan,
        datafusion_distributed::display_plan_ascii(plan.as_ref(), false),
    ));
    Arc::new(ExplainExec::new(
        Arc::clone(explain.schema.inner()),
        plans,
        explain.verbose,
    ))
}

/// The bytes of the files the scans of `plan` read, by the catalog's statistics (tables
/// without them count nothing).
fn scanned_bytes(plan: &LogicalPlan) -> u64 {
    let mut bytes: u64 = 0;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = datafusion::datasource::source_as_provider(&scan.source)
            && let Some(stats) = provider.statistics()
            && let Some(size) = stats.total_byte_size.get_value()
        {
            bytes = bytes.saturating_add(*size as u64);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    bytes
}

/// Sends every stage a worker would run through serialization and back, as the worker
/// will, and checks the decoded stages' ordering and distribution requirements still hold:
/// an error names what cannot travel.
fn check_stages(
    plan: &Arc<dyn ExecutionPlan>,
    state: &SessionState,
    worker: &TaskContext,
) -> Result<()> {
    let codec = DistributedCodec::new_combined_with_user(state.config());
    let mut result = Ok(());
    plan.apply(|node| {
        if !node.is_network_boundary() {
            return Ok(TreeNodeRecursion::Continue);
        }
        // The boundary with the stages below it, each task's scan as the first task's.
        let stage = Arc::clone(node)
            .transform_down(|n| {
                Ok(match n.downcast_ref::<DistributedLeafExec>() {
                    Some(leaf) => match leaf.variants().first() {
                        Some(first) => Transformed::yes(Arc::clone(first)),
                        None => Transformed::no(n),
                    },
                    None => Transformed::no(n),
                })
            })?
            .data;
        let sent = physical_plan_to_bytes_with_proto_converter(
            stage,
            &codec,
            &DeduplicatingProtoConverter::default(),
        )
        .and_then(|bytes| {
            physical_plan_from_bytes_with_proto_converter(
                &bytes,
                worker,
                &codec,
                &DeduplicatingProtoConverter::default(),
            )
        });
        // A worker sees what arrives over the network with no ordering or equivalence
        // (only its schema and partitioning): a node that relied on one (a window over a
        // sort by a column the join made equal to its key) must not be sent.
        let checked = sent
            .and_then(|decoded| SanityCheckPlan::new().optimize(decoded, state.config_options()));
        if let Err(e) = checked {
            result = Err(e);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Jump)
    })?;
    result
}
