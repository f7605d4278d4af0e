//! The query engine: DataFusion sessions whose catalog is Tarn's catalog.
//!
//! Tables are `database.table` in the catalog `tarn`. The table list is a snapshot of the
//! catalog at a generation: each query first asks the catalog for its generation (one
//! indexed read) and reloads the list only when a crawl has committed since. Table
//! providers are cached per table version, so a table's file list is read from the
//! catalog once per change, not once per query.

pub mod cache;
mod ctas;
pub mod ddl;
pub mod history;
pub mod limits;
mod metrics;
mod parse;
mod planner;
pub mod settings;
mod sql_views;
mod streams;
pub mod system;
pub mod time_travel;
mod views;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use arrow::array::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::SQLOptions;
use datafusion::execution::context::SessionState;
use datafusion::execution::{SendableRecordBatchStream, SessionStateBuilder};
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use futures::TryStreamExt;

use crate::catalog::{Catalog, TableEntry, TableFormat};
use crate::error::{Error, Result};
use crate::storage::{Location, StoreRegistry};
use crate::table::CatalogTable;

pub use crate::table::CATALOG_NAME;
/// The database unqualified table names resolve in.
pub const DEFAULT_DATABASE: &str = "default";

/// The catalog at one generation: databases and their tables.
#[derive(Debug, Default)]
struct Snapshot {
    generation: i64,
    databases: BTreeMap<String, BTreeMap<String, TableEntry>>,
}

#[derive(Debug)]
struct Shared {
    catalog: Catalog,
    stores: Arc<StoreRegistry>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Providers by table id, with the entry they were built from (ids can be reused
    /// after a drop, so the whole entry is compared, not only the version).
    providers: Mutex<HashMap<i64, (TableEntry, Arc<CatalogTable>)>>,
    /// Rollups by base table, with their freshness, as of the snapshot's generation.
    rollups: crate::rollup::rewrite::SharedIndex,
    /// Rollups' rows in memory by storage table id, with the entry they were read from.
    #[allow(clippy::type_complexity)]
    rollup_memory: Mutex<HashMap<i64, (TableEntry, Arc<datafusion::datasource::MemTable>, usize)>>,
    /// Held while stale rollups are being refreshed (one pass at a time).
    rollup_refresh: tokio::sync::Mutex<()>,
    /// Answers of repeated queries.
    results: Arc<cache::ResultCache>,
    /// Earlier versions of Delta tables read by time travel, by table id, table version
    /// and Delta version.
    #[allow(clippy::type_complexity)]
    versions: Mutex<HashMap<(i64, i64, u64), Arc<CatalogTable>>>,
    /// Places for running queries and the query timeout.
    admission: limits::Admission,
    /// Where statements are recorded as they end.
    history: Arc<history::History>,
    /// The client connections seen lately (`system.sessions`).
    sessions: system::Sessions,
    /// Bytes of rollups' rows kept in memory (the engines' `rollup_memory`).
    rollup_budget: usize,
    /// Views (`CREATE VIEW`) as of the snapshot's generation.
    sql_views: sql_views::ViewIndex,
    /// The newest generation whose snapshot, views and rollup index are all in place (a
    /// query at that generation needs no refresh).
    ready: std::sync::atomic::AtomicI64,
    /// The server's `target_partitions`: the most a session may ask for.
    target_partitions: usize,
    /// The server's planner switches (`tarn.<key>`, value): what a session's `RESET`
    /// returns to.
    switches: Vec<(String, String)>,
    /// Streamed records: the log and the tables' buffers.
    streams: Arc<crate::stream::Streams>,
    /// Held while buffered records are delivered (one pass at a time).
    delivering: tokio::sync::Mutex<()>,
}

/// Plans and runs SQL over the catalog. Cheap to clone; shared by all requests.
#[derive(Debug, Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    state: SessionState,
    /// URL prefixes SQL statements may name as locations.
    allowed_locations: Arc<Vec<String>>,
    /// Where Tarn writes tables of its own (ingested tables, rollups).
    warehouse: Option<Arc<Location>>,
    /// Bytes of Arrow memory for rollups' rows (see [`EngineOptions::rollup_memory`]).
    rollup_memory: usize,
    /// Whether the rollup rewrite is among the optimizer rules (part of result cache keys).
    rollup_rewrite: bool,
    /// Who runs this engine's statements and what they are, for the query history.
    label: Option<Arc<history::QueryLabel>>,
    /// The session settings this engine plans with (see [`Engine::with_settings`]).
    settings: Arc<settings::Settings>,
}

/// A planned statement: a query for DataFusion, or a command Tarn runs itself.
#[derive(Debug)]
pub enum Statement {
    Query(Box<DataFrame>),
    Command(ddl::Command),
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// DataFusion settings as `key = value` (e.g. `datafusion.execution.target_partitions`).
    pub datafusion_config: Vec<(String, String)>,
    /// Locations (paths or URLs) under which SQL DDL may create tables.
    pub allowed_locations: Vec<String>,
    /// Location (path or URL) under which Tarn writes tables it creates itself, e.g. by
    /// bulk ingest: `<warehouse>/<database>/<table>/`.
    pub warehouse: Option<String>,
    /// Whether aggregations may be answered from materialized views (rollups).
    pub rollup_rewrite: bool,
    /// Bytes of Arrow memory for keeping rollups' rows in memory (0: scan their files). A
    /// server sets it; one-shot commands do not pay for loading.
    pub rollup_memory: usize,
    /// Bytes of memory for the result cache (0: off). A server sets it.
    pub result_cache: usize,
    /// The memory pool queries reserve from, and where they spill (`None`: unbounded).
    pub memory: Option<limits::MemoryLimit>,
    /// Admission (places and queue) and the query timeout.
    pub limits: limits::QueryLimits,
    /// How long the query history keeps statements (`None`: no history).
    pub history_retention: Option<chrono::TimeDelta>,
    /// What the engine's session gains after Tarn's planner and rules are in place (a
    /// coordinator's distributed planner); `None`: queries run in this process.
    pub session_extension: Option<Arc<dyn SessionExtension>>,
}

/// Something added to the engine's session after Tarn's planner and rules: it may wrap
/// the query planner (see `tarn-distributed`).
pub trait SessionExtension: std::fmt::Debug + Send + Sync {
    /// `builder`, extended.
    ///
    /// # Errors
    /// When the extension's settings cannot be applied.
    fn extend(&self, builder: SessionStateBuilder) -> Result<SessionStateBuilder>;
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            datafusion_config: Vec::new(),
            allowed_locations: Vec::new(),
            warehouse: None,
            rollup_rewrite: true,
            rollup_memory: 0,
            result_cache: 0,
            memory: None,
            limits: limits::QueryLimits::default(),
            history_retention: None,
            session_extension: None,
        }
    }
}

impl Engine {
    /// Creates an engine over `catalog`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown or malformed DataFusion setting.
    pub fn new(
        catalog: Catalog,
        stores: Arc<StoreRegistry>,
        options: &EngineOptions,
    ) -> Result<Self> {
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema(CATALOG_NAME, DEFAULT_DATABASE)
            .with_create_default_catalog_and_schema(false)
            .with_option_extension(tarn_optimizer::TarnOptions::default());
        // Filters prune files, row groups and pages, but are not evaluated inside the
        // Parquet decoder (DataFusion's default): with late materialisation on, TPC-H SF1
        // took 18% longer in sum (Q6 and Q9 about twice as long), and the dashboard
        // benchmark's base scans were no faster (benches/results/tpch-tuning.md).
        // A hash join whose build side is estimated under 32 MB or a million rows builds
        // one table that every partition probes, instead of hash-partitioning both sides:
        // on two cores, repartitioning a large probe side (lineitem) cost more than
        // building the table on one thread. TPC-H SF10: Q5 -15%, Q17 -22%, the joins'
        // sum -4 to -6% (DataFusion's defaults are 1 MB and 128k rows).
        let optimizer = &mut config.options_mut().optimizer;
        optimizer.hash_join_single_partition_threshold = 32 * 1024 * 1024;
        optimizer.hash_join_single_partition_threshold_rows = 1024 * 1024;
        for (k, v) in &options.datafusion_config {
            let key = if k.starts_with("datafusion.") || k.starts_with("tarn.") {
                k.clone()
            } else {
                format!("datafusion.{k}")
            };
            config.options_mut().set(&key, v).map_err(|e| {
                Error::InvalidArgument(format!("DataFusion setting '{k}': {}", e.strip_backtrace()))
            })?;
        }
        let shared = Arc::new(Shared {
            catalog: catalog.clone(),
            stores,
            snapshot: RwLock::new(Arc::new(Snapshot {
                generation: -1,
                ..Default::default()
            })),
            providers: Mutex::new(HashMap::new()),
            rollups: Default::default(),
            rollup_refresh: tokio::sync::Mutex::new(()),
            rollup_memory: Mutex::new(HashMap::new()),
            results: Arc::new(cache::ResultCache::new(options.result_cache)),
            versions: Mutex::default(),
            admission: limits::Admission::new(
                options.limits.clone(),
                options.memory.as_ref().map(|m| m.bytes),
            ),
            history: Arc::new(history::History::new(
                catalog.clone(),
                options.history_retention,
            )),
            sessions: system::Sessions::default(),
            rollup_budget: options.rollup_memory,
            sql_views: Default::default(),
            ready: std::sync::atomic::AtomicI64::new(i64::MIN),
            target_partitions: config.target_partitions(),
            switches: settings::switch_values(config.options()),
            streams: Arc::default(),
            delivering: tokio::sync::Mutex::new(()),
        });
        let metrics = Arc::clone(&shared.admission.metrics);
        catalog.observe(Arc::new(move |event| metrics.catalog(event)));
        // The rollup rewrite runs first, on the plan as the query wrote it (before filters
        // and projections are pushed into scans).
        let mut first: Vec<Arc<dyn datafusion::optimizer::OptimizerRule + Send + Sync>> =
            Vec::new();
        if options.rollup_rewrite {
            first.push(Arc::new(crate::rollup::rewrite::RollupRewrite::new(
                Arc::clone(&shared.rollups),
            )));
        }
        let builder = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime_env(options.memory.as_ref())?)
            .with_default_features();
        let mut builder =
            tarn_optimizer::register(builder, first, Arc::new(planner::EnginePlanner::default()));
        if let Some(extension) = &options.session_extension {
            builder = extension.extend(builder)?;
        }
        let mut state = builder.build();
        tarn_functions::register(&mut state)?;
        state.catalog_list().register_catalog(
            CATALOG_NAME.to_string(),
            Arc::new(TarnCatalog {
                shared: Arc::clone(&shared),
            }),
        );
        let allowed_locations = options
            .allowed_locations
            .iter()
            .filter_map(|root| match Location::parse(root) {
                Ok(location) => Some(location.url.to_string()),
                Err(e) => {
                    tracing::warn!(%root, error = %e, "ignoring an allowed location");
                    None
                }
            })
            .collect();
        let warehouse = match &options.warehouse {
            Some(w) => Some(Arc::new(Location::parse(w)?)),
            None => None,
        };
        Ok(Self {
            shared,
            state,
            allowed_locations: Arc::new(allowed_locations),
            warehouse,
            rollup_memory: options.rollup_memory,
            rollup_rewrite: options.rollup_rewrite,
            label: None,
            settings: Arc::default(),
        })
    }

    /// This engine running statements for `label` (recorded in the query history under
    /// its user; `system.queries` shows a reader only their own).
    /// A time limit the label does not set comes from the session's `query_timeout`.
    pub fn labelled(&self, mut label: history::QueryLabel) -> Engine {
        if label.timeout.is_none() {
            label.timeout = self.settings.timeout();
        }
        let label = Arc::new(label);
        let mut engine = self.clone();
        engine.state.config_mut().set_extension(Arc::clone(&label));
        engine.label = Some(label);
        engine
    }

    /// An engine over `shared` planning with `state` (a system table's reads, inside a
    /// query's planning).
    fn over(shared: Arc<Shared>, state: SessionState) -> Engine {
        let rollup_memory = shared.rollup_budget;
        Engine {
            shared,
            state,
            allowed_locations: Arc::default(),
            warehouse: None,
            rollup_memory,
            rollup_rewrite: true,
            label: None,
            settings: Arc::default(),
        }
    }

    /// The id of this engine's labelled statement (as `system.queries` and its log lines
    /// show it).
    pub fn query_id(&self) -> Option<String> {
        self.label.as_ref().map(|l| l.id.clone())
    }

    /// Notes a call from `user` at `address` through `front_door` (`system.sessions`).
    pub fn client_call(&self, user: &str, address: &str, front_door: &'static str) {
        self.shared.sessions.call(user, address, front_door);
    }

    /// Waits until the statements recorded so far are in the catalog (a command calls it
    /// before it exits).
    pub async fn flush_history(&self) {
        self.shared.history.settled().await;
    }

    /// Statement `id` of the query history: queued or running on this server, or as it
    /// ended (`None` when the history has no such statement).
    ///
    /// # Errors
    /// [`Error::Catalog`] when the catalog cannot be read.
    pub async fn query_record(&self, id: &str) -> Result<Option<crate::catalog::QueryRecord>> {
        self.shared.history.lookup(id).await
    }

    /// Records in the query history a labelled statement that failed before it ran (a
    /// planning error).
    pub fn record_failure(&self, error: &Error) {
        if let Some(label) = &self.label {
            let database = self.default_database();
            let id = label.next_id();
            self.shared.history.record(
                label,
                history::Ended {
                    id,
                    database,
                    outcome: metrics::Outcome::of_error(error),
                    submitted: chrono::Utc::now(),
                    queued: std::time::Duration::ZERO,
                    planning: label.received.elapsed(),
                    ran: std::time::Duration::ZERO,
                    rows: 0,
                    error: Some(error.to_string()),
                    stats: crate::catalog::QueryStats::default(),
                },
            );
        }
    }

    /// Runs `work`, a statement that is not a query (DDL, `INSERT`, `SHOW`, an admin
    /// call), and records it in the query history under this engine's label.
    ///
    /// # Errors
    /// Those of `work`.
    pub async fn recorded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        use tracing::Instrument;
        let Some(label) = &self.label else {
            return work.await;
        };
        let submitted = chrono::Utc::now();
        let started = std::time::Instant::now();
        let result = work.instrument(self.span()).await;
        let (outcome, error) = match &result {
            Ok(_) => (metrics::Outcome::Finished, None),
            Err(e) => (metrics::Outcome::of_error(e), Some(e.to_string())),
        };
        self.shared.history.record(
            label,
            history::Ended {
                id: label.next_id(),
                database: self.default_database(),
                outcome,
                submitted,
                queued: std::time::Duration::ZERO,
                planning: started.saturating_duration_since(label.received),
                ran: started.elapsed(),
                rows: 0,
                error,
                stats: crate::catalog::QueryStats::default(),
            },
        );
        result
    }

    /// This engine without the rollup rewrite: every aggregation reads its base table.
    pub fn without_rollup_rewrite(&self) -> Engine {
        let rules = tarn_optimizer::optimizer_rules();
        let mut engine = self.clone();
        engine.state = SessionStateBuilder::new_from_existing(self.state.clone())
            .with_optimizer_rules(rules)
            .build();
        engine.rollup_rewrite = false;
        engine
    }

    /// The session state every request starts from.
    pub(crate) fn base_state(&self) -> &SessionState {
        &self.state
    }

    /// The session state with scans reading catalogued files only, not streamed records
    /// still buffered (see [`crate::table::FilesOnly`]).
    pub(crate) fn files_only_state(&self) -> SessionState {
        let mut state = self.state.clone();
        state
            .config_mut()
            .set_extension(Arc::new(crate::table::FilesOnly));
        state
    }

    /// The streams' buffers and log.
    pub(crate) fn streams(&self) -> &Arc<crate::stream::Streams> {
        &self.shared.streams
    }

    /// Forgets the cached provider of a table (its files changed).
    pub(crate) fn forget_provider(&self, table_id: i64) {
        if let Ok(mut cache) = self.shared.providers.lock() {
            cache.remove(&table_id);
        }
    }

    /// Every catalogued table by id, as of the snapshot.
    pub(crate) fn tables_by_id(&self) -> HashMap<i64, TableEntry> {
        self.shared
            .snapshot()
            .databases
            .values()
            .flat_map(|tables| tables.values())
            .map(|e| (e.id, e.clone()))
            .collect()
    }

    /// The snapshot's entry of `database.name`.
    pub(crate) fn snapshot_entry(&self, database: &str, name: &str) -> Option<TableEntry> {
        self.shared
            .snapshot()
            .databases
            .get(database)
            .and_then(|d| d.get(name))
            .cloned()
    }

    /// The database unqualified table names resolve in.
    pub fn default_database(&self) -> String {
        self.state.config().options().catalog.default_schema.clone()
    }

    /// This engine with `database` as the default for unqualified names (what a client
    /// sets with a `database` header or JDBC URL property).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the database does not exist.
    pub async fn in_database(&self, database: &str) -> Result<Engine> {
        // The snapshot usually knows the database; only an unknown one needs a fresh look
        // (the statement's own planning refreshes the snapshot anyway).
        if !self.databases().iter().any(|d| d == database) {
            self.refresh().await?;
        }
        if !self.databases().iter().any(|d| d == database) {
            return Err(Error::InvalidArgument(format!(
                "database '{database}' does not exist; see SHOW DATABASES"
            )));
        }
        let mut engine = self.clone();
        engine
            .state
            .config_mut()
            .options_mut()
            .catalog
            .default_schema = database.to_string();
        Ok(engine)
    }

    /// This engine with its session state changed by `change` (a front door's own
    /// functions, schemas or settings); the catalog, rules, rollups, admission and history
    /// stay the ones every engine shares.
    ///
    /// # Errors
    /// What `change` returns.
    pub fn with_state(
        &self,
        change: impl FnOnce(SessionState) -> Result<SessionState>,
    ) -> Result<Engine> {
        let mut engine = self.clone();
        engine.state = change(self.state.clone())?;
        Ok(engine)
    }

    /// The location of a new table Tarn creates itself: `<warehouse>/<database>/<table>/`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when no warehouse is configured.
    pub fn warehouse_location(&self, database: &str, table: &str) -> Result<Location> {
        self.warehouse_prefix(&[database, table])
    }

    /// The prefix `<warehouse>/<segments…>/` (Tarn's own files beside its tables).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when no warehouse is configured.
    pub fn warehouse_prefix(&self, segments: &[&str]) -> Result<Location> {
        let warehouse = self.warehouse.as_ref().ok_or_else(|| {
            Error::InvalidArgument(
                "no warehouse location is configured for tables Tarn creates; start Tarn \
                 with --warehouse PATH_OR_URL"
                    .into(),
            )
        })?;
        let mut url = warehouse.url.clone();
        {
            let mut path = url.path_segments_mut().map_err(|_| {
                Error::Internal(format!("warehouse '{warehouse}' cannot have children"))
            })?;
            path.pop_if_empty().extend(segments).push("");
        }
        Ok(Location { url })
    }

    /// The catalog this engine reads.
    pub fn catalog(&self) -> &Catalog {
        &self.shared.catalog
    }

    /// The object stores this engine reads through.
    pub fn stores(&self) -> &Arc<StoreRegistry> {
        &self.shared.stores
    }

    /// Brings the table list up to date with the catalog (cheap when nothing changed).
    ///
    /// # Errors
    /// [`Error::Catalog`] when the catalog cannot be read.
    pub async fn refresh(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        let generation = self.shared.catalog.generation().await?;
        if self.shared.ready.load(Ordering::Acquire) >= generation {
            return Ok(());
        }
        let mut databases: BTreeMap<String, BTreeMap<String, TableEntry>> = BTreeMap::new();
        for db in self.shared.catalog.databases().await? {
            databases.entry(db.name).or_default();
        }
        for t in self.shared.catalog.tables().await? {
            databases
                .entry(t.database.clone())
                .or_default()
                .insert(t.name.clone(), t);
        }
        // Register every table's object store so scans can reach it.
        for t in databases.values().flat_map(|d| d.values()) {
            if let Ok(location) = Location::parse_catalogued(&t.location)
                && let Ok(store) = self.shared.stores.store_for(&location)
            {
                self.state
                    .runtime_env()
                    .register_object_store(location.store_url().as_ref(), store);
            }
        }
        let snapshot = Arc::new(Snapshot {
            generation,
            databases,
        });
        // Two refreshes can race; never let an older snapshot replace a newer one.
        if let Ok(mut guard) = self.shared.snapshot.write()
            && guard.generation <= snapshot.generation
        {
            *guard = snapshot;
        }
        self.refresh_views(generation).await?;
        self.refresh_rollup_index(generation).await?;
        // Until now a concurrent query at this generation refreshes too, rather than
        // planning against views or rollups not yet in place.
        if self.snapshot().generation == generation {
            self.shared.ready.fetch_max(generation, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Compares every rollup with its base at this generation, for the query rewrite.
    async fn refresh_rollup_index(&self, generation: i64) -> Result<()> {
        let mut index = crate::rollup::RollupIndex::new();
        let mut budget = self.rollup_memory;
        for record in self.shared.catalog.rollups().await? {
            let def = &record.definition;
            let base = match self
                .shared
                .provider(&def.base_database, &def.base_table)
                .await
            {
                Ok(Some(base)) => base,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(rollup = %def.name, error = %e, "rollup left out of rewrites");
                    continue;
                }
            };
            let storage = self
                .shared
                .provider(&def.database, &crate::rollup::storage_table(&def.name))
                .await
                .ok()
                .flatten();
            let filter = match &def.filter {
                Some(f) => match self.analysed_filter(def, f).await {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!(rollup = %def.name, error = %e,
                            "rollup filter cannot be planned; rollup left out of rewrites");
                        continue;
                    }
                },
                None => Vec::new(),
            };
            let mut state =
                crate::rollup::RollupState::new(&record, &base, storage.clone(), filter);
            state.view = self.view_of(def).await;
            if let Some(storage) = storage
                && budget > 0
            {
                state.memory = self.rollup_in_memory(storage, &mut budget).await;
            }
            index
                .entry((def.base_database.clone(), def.base_table.clone()))
                .or_default()
                .push(Arc::new(state));
        }
        // Only the refresh that installed this generation's snapshot may publish.
        if self.snapshot().generation == generation
            && let Ok(mut guard) = self.shared.rollups.write()
        {
            *guard = Arc::new(index);
        }
        Ok(())
    }

    /// A materialized view as a table: its defining query, planned on this snapshot with its
    /// base table's database as the default (the definition reads that one table).
    async fn view_of(
        &self,
        def: &crate::catalog::RollupDef,
    ) -> Option<Arc<dyn datafusion::catalog::TableProvider>> {
        use datafusion::sql::parser::Statement as DFStatement;
        use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
        let mut state = self.state.clone();
        state.config_mut().options_mut().catalog.default_schema = def.base_database.clone();
        let query = match parse::statement(&state, &def.sql) {
            Ok(DFStatement::Statement(s)) => match *s {
                SqlStatement::CreateView(v) => v.query,
                _ => return None,
            },
            _ => return None,
        };
        let text = query.to_string();
        match state
            .statement_to_plan(DFStatement::Statement(Box::new(SqlStatement::Query(query))))
            .await
        {
            Ok(plan) => Some(Arc::new(datafusion::catalog::view::ViewTable::new(
                plan,
                Some(text),
            ))),
            Err(e) => {
                tracing::warn!(view = %def.name, error = %e, "materialized view cannot be queried by name");
                None
            }
        }
    }

    /// A rollup's rows in memory, loaded once per storage version while `budget` lasts.
    async fn rollup_in_memory(
        &self,
        storage: Arc<CatalogTable>,
        budget: &mut usize,
    ) -> Option<Arc<datafusion::datasource::MemTable>> {
        let entry = storage.entry().clone();
        let cached = self.shared.rollup_memory.lock().ok().and_then(|cache| {
            cache
                .get(&entry.id)
                .filter(|(e, _, _)| e.version == entry.version && e.updated_at == entry.updated_at)
                .map(|(_, table, bytes)| (Arc::clone(table), *bytes))
        });
        let (table, bytes) = match cached {
            Some(hit) => hit,
            None => {
                let ctx = SessionContext::new_with_state(self.state.clone());
                let partitions = self.state.config().target_partitions();
                match crate::rollup::load_into_memory(&ctx, storage, partitions, *budget).await {
                    Ok(Some((table, bytes))) => {
                        if let Ok(mut cache) = self.shared.rollup_memory.lock() {
                            cache.insert(entry.id, (entry, Arc::clone(&table), bytes));
                        }
                        (table, bytes)
                    }
                    Ok(None) => return None,
                    Err(e) => {
                        tracing::warn!(table = %entry.name, error = %e,
                            "rollup rows not loaded into memory; its files are scanned");
                        return None;
                    }
                }
            }
        };
        if bytes > *budget {
            return None;
        }
        *budget -= bytes;
        Some(table)
    }

    /// A rollup's `WHERE` clause as the analysed, unqualified conjuncts a query's filter is
    /// compared with.
    async fn analysed_filter(
        &self,
        def: &crate::catalog::RollupDef,
        filter: &str,
    ) -> Result<Vec<datafusion::logical_expr::Expr>> {
        let sql = format!(
            "SELECT * FROM {CATALOG_NAME}.\"{}\".\"{}\" WHERE {filter}",
            def.base_database.replace('"', "\"\""),
            def.base_table.replace('"', "\"\"")
        );
        let statement = parse::statement(&self.state, &sql).map_err(Error::from)?;
        let plan = self
            .state
            .statement_to_plan(statement)
            .await
            .map_err(Error::from)?;
        let plan = self
            .state
            .analyzer()
            .execute_and_check(plan, self.state.config_options(), |_, _| {})
            .map_err(Error::from)?;
        let mut out = Vec::new();
        let _ = datafusion::common::tree_node::TreeNode::apply(&plan, |node| {
            if let datafusion::logical_expr::LogicalPlan::Filter(f) = node {
                for c in datafusion::logical_expr::utils::split_conjunction(&f.predicate) {
                    out.push(crate::rollup::rewrite::strip(c));
                }
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        });
        Ok(out)
    }

    /// The rollups as of the last refresh, with their freshness.
    pub fn rollup_states(&self) -> Vec<Arc<crate::rollup::RollupState>> {
        self.shared
            .rollups
            .read()
            .map(|g| g.values().flatten().cloned().collect())
            .unwrap_or_default()
    }

    /// For `EXPLAIN`: which rollup answers each aggregation of `statement`, and why the
    /// others were not used.
    async fn rollup_notes(&self, statement: datafusion::sql::parser::Statement) -> Vec<String> {
        let index = self.rollup_index();
        if index.is_empty() {
            return Vec::new();
        }
        if !self.rollup_rewrite {
            return vec![
                "none used: the rollup rewrite is off (--no-rollup-rewrite), every aggregation \
                 reads its base table"
                    .into(),
            ];
        }
        let Ok(plan) = self.state.statement_to_plan(statement).await else {
            return Vec::new();
        };
        match self
            .state
            .analyzer()
            .execute_and_check(plan, self.state.config_options(), |_, _| {})
        {
            Ok(plan) => crate::rollup::rewrite::notes(&plan, &index),
            Err(_) => Vec::new(),
        }
    }

    /// The right to run a pass of rollup refreshes, unless one is running.
    pub(crate) fn rollup_refresh_guard(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        self.shared.rollup_refresh.try_lock().ok()
    }

    /// The rollup index as of the last refresh.
    pub(crate) fn rollup_index(&self) -> Arc<crate::rollup::RollupIndex> {
        self.shared
            .rollups
            .read()
            .map(|g| Arc::clone(&g))
            .unwrap_or_default()
    }

    /// The catalog generation of this engine's current snapshot.
    pub fn generation(&self) -> i64 {
        self.snapshot().generation
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot()
    }

    /// Databases and their tables, as of the last refresh (rollup storage left out).
    pub fn tables(&self) -> Vec<TableEntry> {
        self.snapshot()
            .databases
            .values()
            .flat_map(|d| d.values().cloned())
            .filter(|t| !crate::rollup::is_storage_table(&t.name))
            .collect()
    }

    /// Database names, as of the last refresh.
    pub fn databases(&self) -> Vec<String> {
        self.snapshot().databases.keys().cloned().collect()
    }

    /// A fresh session over the current catalog, with `default_database` for unqualified
    /// names.
    ///
    /// # Errors
    /// [`Error::Catalog`] when the catalog cannot be read.
    pub async fn session(&self, default_database: Option<&str>) -> Result<SessionContext> {
        self.refresh().await?;
        let mut state = self.state.clone();
        if let Some(db) = default_database {
            state.config_mut().options_mut().catalog.default_schema = db.to_string();
        }
        Ok(SessionContext::new_with_state(state))
    }

    /// Plans `sql` (with optional bound parameters) into a DataFrame.
    ///
    /// Statements that would change state (DDL, DML, `SET`) are refused: the catalog is
    /// changed by crawls, and a session's settings would not outlive the request.
    ///
    /// # Errors
    /// [`Error::Sql`] for a parse or planning error, [`Error::TableNotFound`] for an unknown
    /// table.
    pub async fn plan(&self, sql: &str, params: Option<ParamValues>) -> Result<DataFrame> {
        self.refresh().await?;
        self.plan_current(sql, params).await
    }

    /// As [`Engine::plan`], on the current catalog snapshot (the caller refreshed it).
    async fn plan_current(&self, sql: &str, params: Option<ParamValues>) -> Result<DataFrame> {
        let statement = parse::statement(&self.state, sql).map_err(Error::from)?;
        let references = self
            .state
            .resolve_table_references(&statement)
            .unwrap_or_default();
        let plan = match self.state.statement_to_plan(statement).await {
            Ok(plan) => plan,
            Err(e) => return Err(plan_error(&self.state, &references, e)),
        };
        read_only().verify_plan(&plan).map_err(Error::from)?;
        let df = DataFrame::new(self.state.clone(), plan);
        match params {
            Some(p) => df.with_param_values(p).map_err(Error::from),
            None => Ok(df),
        }
    }

    /// Plans `sql` with its positional parameters `$1, $2, …` bound from the columns of
    /// `row` (a one-row batch). Each value is cast to the type the planner inferred for
    /// its placeholder, so a client binding an `int64` to an `int32` column still works.
    ///
    /// Plans on the engine's current catalog snapshot: [`Engine::prepare`] refreshes it
    /// first (once per statement, not once per parameter row).
    ///
    /// # Errors
    /// As [`Engine::plan`], plus [`Error::InvalidArgument`] when the number of values does
    /// not match the placeholders or a value cannot be cast.
    pub async fn plan_with_row(&self, sql: &str, row: Option<&RecordBatch>) -> Result<DataFrame> {
        bind_row(self.plan_current(sql, None).await?, row)
    }
}

/// `EXPLAIN`'s rows followed by one `rollups` row per rollup decision (explaining is cheap:
/// the plan is rendered, not run).
async fn with_notes(df: DataFrame, notes: Vec<String>) -> Result<DataFrame> {
    let schema = Arc::new(df.schema().as_arrow().clone());
    if schema.fields().len() != 2 {
        return Ok(df);
    }
    let state = df.clone().into_parts().0;
    let mut batches = df.collect().await.map_err(Error::from)?;
    let kinds = arrow::array::StringArray::from(vec!["rollups"; notes.len()]);
    let texts = arrow::array::StringArray::from(notes);
    batches.push(RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(kinds), Arc::new(texts)],
    )?);
    let batches = batches
        .into_iter()
        .map(|b| b.with_schema(Arc::clone(&schema)))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    SessionContext::new_with_state(state)
        .read_batches(batches)
        .map_err(Error::from)
}

/// Statements a request may plan: queries only (DDL, DML and `SET` go through Tarn's own
/// commands or are refused).
fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Binds the positional parameters `$1, $2, …` of `df` from the columns of `row` (a
/// one-row batch), each cast to the type the planner inferred for its placeholder.
fn bind_row(df: DataFrame, row: Option<&RecordBatch>) -> Result<DataFrame> {
    let Some(row) = row else { return Ok(df) };
    let types = df
        .logical_plan()
        .get_parameter_types()
        .map_err(Error::from)?;
    if types.len() != row.num_columns() {
        return Err(Error::InvalidArgument(format!(
            "the statement has {} parameter(s) but {} value(s) were bound",
            types.len(),
            row.num_columns()
        )));
    }
    let mut values = Vec::with_capacity(row.num_columns());
    for (i, column) in row.columns().iter().enumerate() {
        let value = ScalarValue::try_from_array(column, 0).map_err(Error::from)?;
        let value = match types.get(&format!("${}", i + 1)) {
            Some(Some(expected)) if value.data_type() != *expected => {
                value.cast_to(expected).map_err(|e| {
                    Error::InvalidArgument(format!(
                        "parameter ${} ({}) cannot be used as {expected}: {}",
                        i + 1,
                        value.data_type(),
                        e.strip_backtrace()
                    ))
                })?
            }
            _ => value,
        };
        values.push(value);
    }
    df.with_param_values(values).map_err(Error::from)
}

impl Engine {
    /// Recognises Tarn's own statements, and plans everything else as a query with the
    /// parameters of `row` bound (see [`Engine::plan_with_row`]).
    ///
    /// # Errors
    /// As [`Engine::plan_with_row`].
    pub async fn prepare(&self, sql: &str, row: Option<&RecordBatch>) -> Result<Statement> {
        self.prepare_at(sql, row, None).await
    }

    /// As [`Engine::prepare`], but when `at_least` is given and this engine's catalog
    /// snapshot is already at least that generation, the snapshot is used without asking
    /// the catalog (a ticket planned moments ago on this node needs no second look).
    ///
    /// # Errors
    /// As [`Engine::plan_with_row`].
    pub async fn prepare_at(
        &self,
        sql: &str,
        row: Option<&RecordBatch>,
        at_least: Option<i64>,
    ) -> Result<Statement> {
        use tracing::Instrument;
        self.prepare_in_span(sql, row, at_least)
            .instrument(self.span())
            .await
    }

    /// The span of this engine's statement (none when it is not labelled).
    fn span(&self) -> tracing::Span {
        self.label
            .as_ref()
            .map_or_else(tracing::Span::none, |l| l.span())
    }

    async fn prepare_in_span(
        &self,
        sql: &str,
        row: Option<&RecordBatch>,
        at_least: Option<i64>,
    ) -> Result<Statement> {
        if at_least.is_none_or(|g| self.generation() < g) {
            self.refresh().await?;
        }
        // Parsed once: Tarn's statements are recognised on the tree the planner then takes.
        let mut tokens = parse::tokens(&self.state, sql).map_err(Error::from)?;
        if let Some(found) = crate::engine::time_travel::find(&tokens) {
            let versions = self.resolve_time_travel(&found).await?;
            tokens = found.apply(&versions);
        }
        let statement = match parse::parse(&self.state, tokens).map_err(Error::from)? {
            parse::Parsed::Statement(statement) => statement,
            tarn => {
                let command = ddl::tarn_command(tarn, &self.default_database())?;
                return Ok(Statement::Command(command));
            }
        };
        if let Some(command) = ddl::recognise(self, &statement).await? {
            return Ok(Statement::Command(command));
        }
        let notes = match &statement {
            datafusion::sql::parser::Statement::Explain(e) if !e.options.analyze => {
                self.rollup_notes(e.statement.as_ref().clone()).await
            }
            _ => Vec::new(),
        };
        // The query's own state, with its start time: `now()` and `current_date` are that
        // instant throughout the query.
        let mut state = self.state.clone();
        state.mark_start_execution();
        // The tables it names, asked of the catalog only if planning fails.
        let references = state
            .resolve_table_references(&statement)
            .unwrap_or_default();
        let plan = match state.statement_to_plan(statement).await {
            Ok(plan) => plan,
            Err(e) => return Err(plan_error(&state, &references, e)),
        };
        read_only().verify_plan(&plan).map_err(Error::from)?;
        let mut df = DataFrame::new(state, plan);
        if !notes.is_empty() {
            df = with_notes(df, notes).await?;
        }
        Ok(Statement::Query(Box::new(bind_row(df, row)?)))
    }

    /// The statement with its `VERSION AS OF` / `TIMESTAMP AS OF` clauses replaced by
    /// versioned table names; an instant is resolved to the version it selects now, so the
    /// plan names a fixed version.
    async fn resolve_time_travel(
        &self,
        found: &crate::engine::time_travel::Found,
    ) -> Result<Vec<u64>> {
        use crate::engine::time_travel::Spec;
        let default_db = self.default_database();
        let snapshot = self.snapshot();
        let mut versions = Vec::with_capacity(found.clauses.len());
        for clause in &found.clauses {
            let database = clause.database.as_deref().unwrap_or(&default_db);
            let entry = snapshot
                .databases
                .get(database)
                .and_then(|d| d.get(&clause.table))
                .ok_or_else(|| Error::TableNotFound {
                    name: format!("{database}.{}", clause.table),
                })?;
            if entry.format != TableFormat::Delta {
                return Err(Error::Sql(format!(
                    "{database}.{} is a {} table; VERSION AS OF and TIMESTAMP AS OF read \
                     earlier versions of Delta tables only",
                    clause.table, entry.format
                )));
            }
            versions.push(match &clause.spec {
                Spec::Version(v) => *v,
                Spec::Timestamp(text) => {
                    let instant =
                        arrow::compute::kernels::cast_utils::string_to_datetime(&chrono::Utc, text)
                            .map_err(|_| {
                                Error::Sql(format!(
                                    "TIMESTAMP AS OF '{text}' is not a timestamp; write it like \
                             '2024-05-01 12:00:00' (UTC) or '2024-05-01T12:00:00+02:00'"
                                ))
                            })?;
                    let location = Location::parse_catalogued(&entry.location)?;
                    let store = self.shared.stores.store_for(&location)?;
                    let table = crate::delta::open(
                        store,
                        &entry.location,
                        crate::delta::At::Timestamp(instant.with_timezone(&chrono::Utc)),
                    )
                    .await?;
                    table.version().unwrap_or_default() as u64
                }
            });
        }
        Ok(versions)
    }

    /// Runs `sql` (a query or a Tarn statement) and collects its result.
    ///
    /// # Errors
    /// As [`Engine::prepare`], plus [`Error::Execution`] when execution fails.
    pub async fn query(
        &self,
        sql: &str,
    ) -> Result<(arrow::datatypes::SchemaRef, Vec<RecordBatch>)> {
        match self.prepare(sql, None).await? {
            Statement::Command(command) => {
                let batch = self.run_command(&command).await?;
                Ok((batch.schema(), vec![batch]))
            }
            Statement::Query(df) => {
                let schema = Arc::new(df.schema().as_arrow().clone());
                let stream = self.execute(*df).await?;
                let batches = stream.try_collect().await.map_err(Error::from)?;
                Ok((schema, batches))
            }
        }
    }

    /// Runs a planned query. A query that reads only catalog tables and calls no volatile
    /// function is answered from the result cache when the same plan ran before over the
    /// same versions of its tables and of the materialized views over them.
    ///
    /// # Errors
    /// [`Error::Execution`] when the plan cannot start.
    pub async fn execute(&self, df: DataFrame) -> Result<SendableRecordBatchStream> {
        use tracing::Instrument;
        let span = self.span();
        self.execute_in(df, span.clone()).instrument(span).await
    }

    async fn execute_in(
        &self,
        df: DataFrame,
        span: tracing::Span,
    ) -> Result<SendableRecordBatchStream> {
        let admission = &self.shared.admission;
        let started = std::time::Instant::now();
        let submitted = chrono::Utc::now();
        let reads = limits::reads_tables(df.logical_plan());
        let probe = Arc::new(crate::probe::QueryProbe::default());
        let history = &self.shared.history;
        let mut recorder = self.label.as_ref().map(|label| {
            let id = label.next_id();
            let database = self.default_database();
            history.begin(&id, label, &database, submitted);
            limits::Recorder {
                history: Arc::clone(history),
                label: Arc::clone(label),
                id,
                database,
                submitted,
                before: started.saturating_duration_since(label.received),
                queued: std::time::Duration::ZERO,
                planned: std::time::Duration::ZERO,
                probe: Arc::clone(&probe),
                started,
                recorded: std::sync::atomic::AtomicBool::new(false),
            }
        });
        let place = if reads {
            match admission.admit().await {
                Ok(place) => place,
                Err(e) => {
                    if let Some(r) = &recorder {
                        r.record(metrics::Outcome::Refused, started.elapsed(), 0, 0, Some(&e));
                    }
                    return Err(e);
                }
            }
        } else {
            limits::Place::free()
        };
        let admitted = started.elapsed();
        if let Some(r) = recorder.as_mut() {
            r.queued = admitted;
            history.admitted(&r.id);
        }
        let run = self.execute_admitted(df, Some(&probe)).await;
        if let Some(r) = recorder.as_mut() {
            r.planned = started.elapsed().saturating_sub(admitted);
        }
        match run {
            Ok(stream) => {
                let timeout = admission.timeout(self.label.as_ref().and_then(|l| l.timeout));
                Ok(admission.govern(
                    stream,
                    place,
                    limits::Watch {
                        started,
                        timeout,
                        recorder,
                        probe,
                        span,
                    },
                ))
            }
            Err(e) => {
                let outcome = metrics::Outcome::of_error(&e);
                admission.metrics.record(outcome, started.elapsed(), 0);
                if let Some(r) = &recorder {
                    r.record(outcome, started.elapsed(), 0, 0, Some(&e));
                }
                Err(e)
            }
        }
    }

    /// The engine's metrics in Prometheus' text format.
    pub fn render_metrics(&self) -> String {
        let runtime = self.state.runtime_env();
        let spilling = runtime.spilling_progress();
        let cache = self.result_cache_stats();
        self.shared.admission.metrics.render(&metrics::State {
            queued: self.queries_waiting(),
            pool_reserved: runtime.memory_pool.reserved(),
            spill_files: spilling.active_files_count,
            spill_bytes: usize::try_from(spilling.current_bytes).unwrap_or(usize::MAX),
            cache_hits: cache.hits,
            cache_misses: cache.misses,
            cache_bytes: cache.bytes,
        })
    }

    /// The engine's metrics.
    pub(crate) fn metrics(&self) -> &metrics::Metrics {
        &self.shared.admission.metrics
    }

    /// Queries waiting for a place among the running ones.
    pub fn queries_waiting(&self) -> usize {
        self.shared.admission.waiting()
    }

    /// Plans and starts `df` (or serves it from the result cache); a query that reads
    /// tables is measured by `probe` (its scans, its view, its memory through a pool of
    /// its own in front of the server's).
    async fn execute_admitted(
        &self,
        df: DataFrame,
        probe: Option<&Arc<crate::probe::QueryProbe>>,
    ) -> Result<SendableRecordBatchStream> {
        let results = &self.shared.results;
        let key = if results.enabled() {
            match cache::plan_inputs(df.logical_plan()) {
                Some(inputs) => Some(self.cache_key(&df, &inputs)),
                None => {
                    results.skipped();
                    None
                }
            }
        } else {
            None
        };
        let (mut state, plan) = df.into_parts();
        if let Some(probe) = probe {
            state.config_mut().set_extension(Arc::clone(probe));
        }
        // A query's own memory is measured for the history only.
        let measure_memory = self.shared.history.enabled();
        let start = || async move {
            let physical = state.create_physical_plan(&plan).await?;
            let mut task = datafusion::execution::TaskContext::from(&state);
            if let Some(probe) = probe {
                probe.ran(&physical);
                if measure_memory {
                    task = task.with_runtime(probe.runtime(state.runtime_env())?);
                }
            }
            datafusion::physical_plan::execute_stream(physical, Arc::new(task))
        };
        match key {
            Some(key) => results.serve(key, start).await,
            None => start().await,
        }
        .map_err(Error::from)
    }

    /// The result cache's key of `df`: its plan, the versions of the tables it reads and
    /// of the materialized views over them, whether each of those views is serving rows
    /// behind its base within its staleness allowance (so an answer cached then is not
    /// served once the allowance has passed), and whether the rollup rewrite is on.
    fn cache_key(&self, df: &DataFrame, inputs: &[cache::Input]) -> String {
        let now = chrono::Utc::now();
        let views: Vec<(i64, i64, bool)> = self
            .rollup_states()
            .iter()
            .filter(|s| {
                inputs
                    .iter()
                    .any(|i| i.database == s.def.base_database && i.name == s.def.base_table)
            })
            .filter_map(|s| {
                let behind = !s.stale.is_empty() && s.within_staleness_allowance(now);
                s.storage
                    .as_ref()
                    .map(|t| (t.entry().id, t.entry().version, behind))
            })
            .collect();
        // Streamed records change a table's rows between its versions.
        let streamed: Vec<u64> = inputs
            .iter()
            .map(|i| self.shared.streams.newest(i.id))
            .collect();
        format!(
            "{}\n{inputs:?}\n{views:?}\n{streamed:?}\nrewrite={}",
            df.logical_plan().display_indent(),
            self.rollup_rewrite
        )
    }

    /// The result cache's size and counters.
    pub fn result_cache_stats(&self) -> cache::CacheStats {
        self.shared.results.stats()
    }

    /// The provider of `database.name`, built from the catalog (cached per version).
    async fn provider(&self, database: &str, name: &str) -> Result<Option<Arc<CatalogTable>>> {
        self.shared.provider(database, name).await
    }

    /// The provider of a table, for callers outside DataFusion (tests, tools).
    ///
    /// # Errors
    /// [`Error::TableNotFound`] when the table is not in the catalog.
    pub async fn table(&self, database: &str, name: &str) -> Result<Arc<CatalogTable>> {
        self.refresh().await?;
        self.provider(database, name)
            .await?
            .ok_or_else(|| Error::TableNotFound {
                name: format!("{database}.{name}"),
            })
    }
}

impl Shared {
    /// The materialized view `database.name`, as a queryable view.
    fn view(&self, database: &str, name: &str) -> Option<Arc<dyn TableProvider>> {
        let index = self.rollups.read().ok()?;
        index
            .values()
            .flatten()
            .find(|s| s.def.database == database && s.def.name == name)
            .and_then(|s| s.view.clone())
    }

    /// Names of the queryable materialized views of `database`.
    fn view_names(&self, database: &str) -> Vec<String> {
        self.rollups
            .read()
            .map(|index| {
                index
                    .values()
                    .flatten()
                    .filter(|s| s.def.database == database && s.view.is_some())
                    .map(|s| s.def.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .map(|g| Arc::clone(&g))
            .unwrap_or_default()
    }

    async fn provider(&self, database: &str, name: &str) -> Result<Option<Arc<CatalogTable>>> {
        let snapshot = self.snapshot();
        let Some(entry) = snapshot.databases.get(database).and_then(|d| d.get(name)) else {
            return Ok(None);
        };
        if let Ok(cache) = self.providers.lock()
            && let Some((built_from, provider)) = cache.get(&entry.id)
            && built_from.version == entry.version
            && built_from.updated_at == entry.updated_at
            && built_from.location == entry.location
            && built_from.database == entry.database
            && built_from.name == entry.name
        {
            return Ok(Some(Arc::clone(provider)));
        }
        let location = Location::parse_catalogued(&entry.location)?;
        let properties = if entry.format == TableFormat::Delta {
            self.catalog.table_properties(entry.id).await?
        } else {
            crate::catalog::TableProperties::default()
        };
        let provider = if entry.format == TableFormat::Delta && properties.deprecated.is_some() {
            // Its log is gone: like any table whose folder is gone, it answers empty.
            Arc::new(CatalogTable::try_new(
                entry.clone(),
                Vec::new(),
                location.store_url(),
                None,
            )?)
        } else if entry.format == TableFormat::Delta {
            let at = match properties.delta_version() {
                Some(v) => crate::delta::At::Version(v),
                None => crate::delta::At::Newest,
            };
            Arc::new(self.delta_table(entry, at).await?)
        } else {
            // Read the entry again with its files, so they belong to one version even if a
            // crawl commits in between (the version then simply moves on). A stream's
            // delivery cannot commit meanwhile: the provider knows which buffered records
            // its files hold.
            let gate = self.streams.gate().read().await;
            let view = match entry.format {
                TableFormat::Parquet => self.streams.reader(&crate::stream::TableKey {
                    id: entry.id,
                    database: entry.database.clone(),
                    name: entry.name.clone(),
                }),
                _ => None,
            };
            let files = self.catalog.files(entry.id).await?;
            drop(gate);
            let text = match entry.format {
                TableFormat::Parquet => None,
                format => {
                    let properties = self.catalog.table_properties(entry.id).await?;
                    crate::table::TextOptions::of(format, &properties)
                }
            };
            Arc::new(
                CatalogTable::try_new(entry.clone(), files, location.store_url(), text)?
                    .with_stream(view),
            )
        };
        if let Ok(mut cache) = self.providers.lock() {
            cache.insert(entry.id, (entry.clone(), Arc::clone(&provider)));
        }
        Ok(Some(provider))
    }
}

impl Shared {
    /// A Delta table at one version, read through deltalake.
    async fn delta_table(&self, entry: &TableEntry, at: crate::delta::At) -> Result<CatalogTable> {
        let location = Location::parse_catalogued(&entry.location)?;
        let store = self.stores.store_for(&location)?;
        let table = crate::delta::open(store, &entry.location, at).await?;
        let provider = crate::delta::provider(&table, &entry.location)?;
        Ok(CatalogTable::delegating(entry.clone(), provider))
    }

    /// `name@v<N>` (see [`crate::engine::time_travel`]): version N of the Delta table `name`.
    async fn versioned(&self, database: &str, name: &str) -> Result<Option<Arc<CatalogTable>>> {
        let Some((table, version)) = crate::engine::time_travel::split_versioned(name) else {
            return Ok(None);
        };
        let snapshot = self.snapshot();
        let Some(entry) = snapshot.databases.get(database).and_then(|d| d.get(table)) else {
            return Ok(None);
        };
        let key = (entry.id, entry.version, version);
        if let Ok(cache) = self.versions.lock()
            && let Some(provider) = cache.get(&key)
        {
            return Ok(Some(Arc::clone(provider)));
        }
        if entry.format != TableFormat::Delta {
            return Err(Error::Sql(format!(
                "{database}.{table} is a {} table; VERSION AS OF and TIMESTAMP AS OF read \
                 earlier versions of Delta tables only",
                entry.format
            )));
        }
        let provider = Arc::new(
            self.delta_table(entry, crate::delta::At::Version(version))
                .await?,
        );
        if let Ok(mut cache) = self.versions.lock() {
            // A few versions are read again and again (a dashboard comparing two days);
            // older ones are simply dropped.
            if cache.len() >= 32 {
                cache.clear();
            }
            cache.insert(key, Arc::clone(&provider));
        }
        Ok(Some(provider))
    }
}

/// A planning failure as Tarn reports it: the first table the statement names that the
/// session does not have, as [`Error::TableNotFound`] (asked of the catalog, not read
/// from DataFusion's message), or DataFusion's error.
fn plan_error(
    state: &datafusion::execution::context::SessionState,
    references: &[datafusion::common::TableReference],
    e: DataFusionError,
) -> Error {
    for reference in references {
        let table = reference.table();
        // A table function (`generate_series(…)`) is not a table of a schema.
        if reference.schema().is_none() && state.table_functions().contains_key(table) {
            continue;
        }
        let exists = state
            .schema_for_ref(reference.clone())
            .is_ok_and(|schema| schema.table_exist(table));
        if !exists {
            let defaults = &state.config().options().catalog;
            let resolved = reference
                .clone()
                .resolve(&defaults.default_catalog, &defaults.default_schema);
            return Error::TableNotFound {
                name: format!("{}.{}", resolved.schema, resolved.table),
            };
        }
    }
    Error::from(e)
}

#[derive(Debug)]
struct TarnCatalog {
    shared: Arc<Shared>,
}

impl CatalogProvider for TarnCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.shared.snapshot().databases.keys().cloned().collect();
        names.push(SYSTEM_DATABASE.to_string());
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == SYSTEM_DATABASE {
            return Some(Arc::new(system::SystemDatabase {
                shared: Arc::clone(&self.shared),
            }));
        }
        self.shared
            .snapshot()
            .databases
            .contains_key(name)
            .then(|| {
                Arc::new(TarnDatabase {
                    shared: Arc::clone(&self.shared),
                    name: name.to_string(),
                }) as _
            })
    }
}

pub use system::SYSTEM_DATABASE;

#[derive(Debug)]
struct TarnDatabase {
    shared: Arc<Shared>,
    name: String,
}

#[async_trait]
impl SchemaProvider for TarnDatabase {
    fn table_names(&self) -> Vec<String> {
        self.shared
            .snapshot()
            .databases
            .get(&self.name)
            .map(|t| {
                t.keys()
                    .filter(|n| !crate::rollup::is_storage_table(n))
                    .cloned()
                    .chain(self.shared.view_names(&self.name))
                    .chain(self.shared.sql_view_names(&self.name))
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        match self.shared.provider(&self.name, name).await {
            Ok(Some(p)) => Ok(Some(p as Arc<dyn TableProvider>)),
            Ok(None) => match self.shared.view(&self.name, name) {
                Some(view) => Ok(Some(view)),
                None => match self.shared.sql_view(&self.name, name) {
                    Some(sql_views::Planned::Ready(view)) => Ok(Some(view)),
                    Some(sql_views::Planned::Broken(why)) => Err(DataFusionError::Plan(why)),
                    None => match self.shared.versioned(&self.name, name).await {
                        Ok(p) => Ok(p.map(|p| p as Arc<dyn TableProvider>)),
                        Err(e) => Err(DataFusionError::External(Box::new(e))),
                    },
                },
            },
            Err(e) => Err(DataFusionError::External(Box::new(e))),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        // A table's earlier version (time travel) exists where the table does.
        let table = crate::engine::time_travel::split_versioned(name).map_or(name, |(t, _)| t);
        self.shared
            .snapshot()
            .databases
            .get(&self.name)
            .is_some_and(|t| t.contains_key(name) || t.contains_key(table))
            || self.shared.view(&self.name, name).is_some()
            || self.shared.sql_view(&self.name, name).is_some()
    }
}

/// The runtime every session shares: the memory pool and spill directory of `memory`, or
/// DataFusion's unbounded defaults.
fn runtime_env(
    memory: Option<&limits::MemoryLimit>,
) -> Result<Arc<datafusion::execution::runtime_env::RuntimeEnv>> {
    runtime_with(
        memory,
        datafusion::execution::runtime_env::RuntimeEnvBuilder::new(),
    )
}

/// The runtime of a worker of distributed queries: `memory` as a server's, and object
/// stores built from `stores` on first use, since a worker has no catalog to register
/// them from (see [`crate::storage::OnDemandStores`]).
///
/// # Errors
/// When the runtime cannot be built (e.g. the spill directory).
pub fn worker_runtime(
    stores: Arc<StoreRegistry>,
    memory: Option<&limits::MemoryLimit>,
) -> Result<Arc<datafusion::execution::runtime_env::RuntimeEnv>> {
    let builder = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_object_store_registry(Arc::new(crate::storage::OnDemandStores::new(stores)));
    runtime_with(memory, builder)
}

fn runtime_with(
    memory: Option<&limits::MemoryLimit>,
    mut builder: datafusion::execution::runtime_env::RuntimeEnvBuilder,
) -> Result<Arc<datafusion::execution::runtime_env::RuntimeEnv>> {
    use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
    if let Some(memory) = memory {
        builder = builder.with_memory_pool(limits::memory_pool(memory.bytes));
        if let Some(dir) = &memory.spill_dir {
            builder = builder.with_disk_manager_builder(
                DiskManagerBuilder::default()
                    .with_mode(DiskManagerMode::Directories(vec![dir.clone()])),
            );
        }
    }
    builder.build_arc().map_err(Error::from)
}
