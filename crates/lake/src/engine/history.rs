//! The query history: every statement a front door runs through the engine is recorded in
//! the catalog as it ends (who, which database, the SQL, how it ended, how long it waited,
//! planned and ran, rows and bytes returned, what it scanned and pruned, the view or cache
//! that answered, its peak memory and spill, the error), kept for a retention period, and
//! readable as `system.queries` with the statements still queued or running, where readers
//! see their own statements and admins everyone's.
//!
//! Records are written in the background so a query's end never waits for the catalog;
//! a read of `system.queries` first waits (briefly) for the writes in flight, so a client
//! sees its previous statement.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{
    ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use tokio::sync::Notify;

use crate::catalog::{Catalog, QueryRecord, QueryStats};
use crate::engine::metrics::Outcome;

/// Who runs a statement and what it is: set by the front door on the engine it plans with.
#[derive(Debug, Clone)]
pub struct QueryLabel {
    /// The statement's id in the history and on its log lines.
    pub id: String,
    /// The authenticated user (`anonymous` without authentication, `cli` for commands).
    pub user: String,
    /// Whether the user may see everyone's statements in `system.queries`.
    pub admin: bool,
    /// The statement's text, as the client sent it.
    pub sql: String,
    /// The front door it came through: `flight`, `cli`, `admin`, `http`.
    pub front_door: &'static str,
    /// A time limit the client's session asked for; it can only lower the server's.
    pub timeout: Option<Duration>,
    /// When the front door received the statement (planning time runs from here).
    pub received: std::time::Instant,
    /// How many times it has run (a statement with several parameter rows runs once for
    /// each; each run is recorded under an id of its own).
    runs: Arc<AtomicUsize>,
}

impl QueryLabel {
    /// The label of `sql` run by `user` through `front_door`, received now.
    pub fn new(user: &str, admin: bool, sql: &str, front_door: &'static str) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            user: user.to_string(),
            admin,
            sql: sql.to_string(),
            front_door,
            timeout: None,
            received: std::time::Instant::now(),
            runs: Arc::default(),
        }
    }

    /// The label with the time limit the client's session asked for.
    pub fn with_timeout(self, timeout: Option<Duration>) -> Self {
        Self { timeout, ..self }
    }

    /// The history id of the statement's next run: its own id first, then `<id>.<n>`.
    pub(crate) fn next_id(&self) -> String {
        match self.runs.fetch_add(1, Ordering::Relaxed) {
            0 => self.id.clone(),
            n => format!("{}.{n}", self.id),
        }
    }

    /// The span a statement's work runs in: every log line it writes names it.
    pub(crate) fn span(&self) -> tracing::Span {
        tracing::info_span!("query", query_id = %self.id, user = %self.user)
    }
}

/// How a statement ended and what it cost.
pub(crate) struct Ended {
    pub id: String,
    pub database: String,
    pub outcome: Outcome,
    pub submitted: DateTime<Utc>,
    pub queued: Duration,
    pub planning: Duration,
    pub ran: Duration,
    pub rows: u64,
    pub error: Option<String>,
    pub stats: QueryStats,
}

/// A statement that has not ended: waiting for a place or running.
#[derive(Debug, Clone)]
struct Active {
    label: Arc<QueryLabel>,
    database: String,
    submitted: DateTime<Utc>,
    since: std::time::Instant,
    /// When it got its place (`None`: still queued).
    admitted: Option<std::time::Instant>,
}

/// Where records go: a writer task takes them from a channel and commits whatever has
/// arrived in one transaction, so a statement's end costs a channel send.
#[derive(Debug)]
pub(crate) struct History {
    catalog: Catalog,
    /// How long records are kept (`None`: the history is off).
    retention: Option<chrono::TimeDelta>,
    progress: Arc<Progress>,
    /// The writer's channel, opened with the first record (the writer ends with it).
    sender: Mutex<Option<tokio::sync::mpsc::UnboundedSender<QueryRecord>>>,
    active: Mutex<HashMap<String, Active>>,
}

/// Records sent and not yet committed, a signal when none are left, and a request to
/// commit without lingering.
#[derive(Debug, Default)]
struct Progress {
    writing: AtomicUsize,
    written: Notify,
    flush: Notify,
}

impl Progress {
    fn done(&self, n: usize) {
        if self.writing.fetch_sub(n, Ordering::SeqCst) == n {
            self.written.notify_waiters();
        }
    }
}

/// Records committed in one transaction at most.
const BATCH: usize = 500;

/// How long the writer waits for more records before it commits what it has (unless a
/// reader of `system.queries` asks for them): a busy server commits a few times a second
/// instead of once per statement.
const LINGER: Duration = Duration::from_millis(100);

/// How often records past the retention are removed.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// How long a read of `system.queries` waits for records still being written.
const SETTLE: Duration = Duration::from_secs(5);

/// Rows `system.queries` shows at most (the newest).
const SHOWN: i64 = 10_000;

impl History {
    pub(crate) fn new(catalog: Catalog, retention: Option<chrono::TimeDelta>) -> Self {
        Self {
            catalog,
            retention,
            progress: Arc::default(),
            sender: Mutex::new(None),
            active: Mutex::new(HashMap::new()),
        }
    }

    /// Whether statements are recorded (a retention is set).
    pub(crate) fn enabled(&self) -> bool {
        self.retention.is_some()
    }

    /// A statement `id` starts waiting for its place (shown as `queued` until it gets one).
    pub(crate) fn begin(
        &self,
        id: &str,
        label: &Arc<QueryLabel>,
        database: &str,
        submitted: DateTime<Utc>,
    ) {
        if let Ok(mut active) = self.active.lock() {
            active.insert(
                id.to_string(),
                Active {
                    label: Arc::clone(label),
                    database: database.to_string(),
                    submitted,
                    since: std::time::Instant::now(),
                    admitted: None,
                },
            );
        }
    }

    /// Statement `id` got its place and runs.
    pub(crate) fn admitted(&self, id: &str) {
        if let Ok(mut active) = self.active.lock()
            && let Some(a) = active.get_mut(id)
        {
            a.admitted = Some(std::time::Instant::now());
        }
    }

    /// Records how a labelled statement ended (in the background).
    pub(crate) fn record(self: &Arc<Self>, label: &QueryLabel, ended: Ended) {
        if let Ok(mut active) = self.active.lock() {
            active.remove(&ended.id);
        }
        let Some(retention) = self.retention else {
            return;
        };
        let record = QueryRecord {
            query_id: ended.id,
            user: label.user.clone(),
            database: ended.database,
            sql: label.sql.clone(),
            state: ended.outcome.label().to_string(),
            submitted_at: ended.submitted.to_rfc3339_opts(SecondsFormat::Millis, true),
            queued_ms: millis(ended.queued),
            execution_ms: millis(ended.ran),
            rows: i64::try_from(ended.rows).unwrap_or(i64::MAX),
            error: ended.error,
            stats: QueryStats {
                front_door: label.front_door.to_string(),
                planning_ms: millis(ended.planning),
                ..ended.stats
            },
        };
        self.progress.writing.fetch_add(1, Ordering::SeqCst);
        let Ok(mut sender) = self.sender.lock() else {
            self.progress.done(1);
            return;
        };
        if sender.is_none() {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                self.progress.done(1);
                return;
            };
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            runtime.spawn(write_records(
                self.catalog.clone(),
                retention,
                Arc::clone(&self.progress),
                rx,
            ));
            *sender = Some(tx);
        }
        if sender.as_ref().is_none_or(|tx| tx.send(record).is_err()) {
            self.progress.done(1);
        }
    }

    /// The statements that have not ended, as records (`queued` or `running`, times so
    /// far), `user`'s only when given.
    fn active(&self, user: Option<&str>) -> Vec<QueryRecord> {
        let Ok(active) = self.active.lock() else {
            return Vec::new();
        };
        let mut out: Vec<QueryRecord> = active
            .iter()
            .filter(|(_, a)| user.is_none_or(|u| a.label.user == u))
            .map(|(id, a)| {
                let (state, queued, ran) = match a.admitted {
                    None => ("queued", a.since.elapsed(), Duration::ZERO),
                    Some(at) => ("running", at.duration_since(a.since), at.elapsed()),
                };
                QueryRecord {
                    query_id: id.clone(),
                    user: a.label.user.clone(),
                    database: a.database.clone(),
                    sql: a.label.sql.clone(),
                    state: state.to_string(),
                    submitted_at: a.submitted.to_rfc3339_opts(SecondsFormat::Millis, true),
                    queued_ms: millis(queued),
                    execution_ms: millis(ran),
                    rows: 0,
                    error: None,
                    stats: QueryStats {
                        front_door: a.label.front_door.to_string(),
                        ..QueryStats::default()
                    },
                }
            })
            .collect();
        out.sort_by(|a, b| b.submitted_at.cmp(&a.submitted_at));
        out
    }

    /// Statement `id`: queued or running here, or as the catalog recorded its end
    /// (`None` when it is neither, or its record is past the retention).
    pub(crate) async fn lookup(&self, id: &str) -> crate::error::Result<Option<QueryRecord>> {
        if let Some(record) = self.active(None).into_iter().find(|r| r.query_id == id) {
            return Ok(Some(record));
        }
        self.settled().await;
        Ok(self.catalog.query_record(id).await?)
    }

    /// Waits until the records being written are in the catalog (at most [`SETTLE`]).
    pub(crate) async fn settled(&self) {
        let wait = async {
            loop {
                let notified = self.progress.written.notified();
                if self.progress.writing.load(Ordering::SeqCst) == 0 {
                    return;
                }
                self.progress.flush.notify_one();
                notified.await;
            }
        };
        let _ = tokio::time::timeout(SETTLE, wait).await;
    }
}

/// The history's writer: commits the records that have arrived (lingering [`LINGER`] for
/// more), a batch per transaction, and every [`FORGET_EVERY`] removes those past the
/// retention; ends when the history does.
async fn write_records(
    catalog: Catalog,
    retention: chrono::TimeDelta,
    progress: Arc<Progress>,
    mut records: tokio::sync::mpsc::UnboundedReceiver<QueryRecord>,
) {
    let mut forgotten: Option<std::time::Instant> = None;
    let mut batch = Vec::with_capacity(BATCH);
    while records.recv_many(&mut batch, BATCH).await > 0 {
        if batch.len() < BATCH {
            tokio::select! {
                () = tokio::time::sleep(LINGER) => {}
                () = progress.flush.notified() => {}
            }
            while batch.len() < BATCH {
                match records.try_recv() {
                    Ok(record) => batch.push(record),
                    Err(_) => break,
                }
            }
        }
        let forget_before = forgotten
            .is_none_or(|at| at.elapsed() >= FORGET_EVERY)
            .then(|| (Utc::now() - retention).to_rfc3339_opts(SecondsFormat::Millis, true));
        if forget_before.is_some() {
            forgotten = Some(std::time::Instant::now());
        }
        if let Err(e) = catalog
            .record_queries(&batch, forget_before.as_deref())
            .await
        {
            tracing::warn!(error = %e, records = batch.len(), "could not record queries in the history");
        }
        progress.done(batch.len());
        batch.clear();
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `system.queries`: the query history as a table.
#[derive(Debug)]
pub(crate) struct QueriesTable {
    pub(crate) history: Arc<History>,
}

fn queries_schema() -> SchemaRef {
    let utc: Arc<str> = Arc::from("UTC");
    Arc::new(Schema::new(vec![
        Field::new("query_id", DataType::Utf8, false),
        Field::new("user_name", DataType::Utf8, false),
        Field::new("database_name", DataType::Utf8, false),
        Field::new("query", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new(
            "submitted_at",
            DataType::Timestamp(TimeUnit::Millisecond, Some(utc)),
            false,
        ),
        Field::new("queued_ms", DataType::Int64, false),
        Field::new("execution_ms", DataType::Int64, false),
        Field::new("rows_returned", DataType::Int64, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("front_door", DataType::Utf8, false),
        Field::new("planning_ms", DataType::Int64, false),
        Field::new("bytes_returned", DataType::Int64, false),
        Field::new("bytes_scanned", DataType::Int64, false),
        Field::new("files_scanned", DataType::Int64, false),
        Field::new("partitions_scanned", DataType::Int64, false),
        Field::new("partitions_pruned", DataType::Int64, false),
        Field::new("materialized_view", DataType::Utf8, true),
        Field::new("result_cache_hit", DataType::Boolean, false),
        Field::new("peak_memory_bytes", DataType::Int64, false),
        Field::new("spilled_bytes", DataType::Int64, false),
    ]))
}

#[async_trait]
impl TableProvider for QueriesTable {
    fn schema(&self) -> SchemaRef {
        queries_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        // Without a label (a command of the machine's own user) everything is visible.
        let viewer = state.config().get_extension::<QueryLabel>();
        let only = viewer
            .as_ref()
            .filter(|v| !v.admin)
            .map(|v| v.user.as_str());
        self.history.settled().await;
        let mut records = self.history.active(only);
        records.extend(
            self.history
                .catalog
                .query_history(only, SHOWN)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?,
        );
        let batch = to_batch(&records)?;
        let table = MemTable::try_new(queries_schema(), vec![vec![batch]])?;
        table.scan(state, projection, filters, limit).await
    }
}

fn to_batch(records: &[QueryRecord]) -> datafusion::error::Result<RecordBatch> {
    let text = |f: fn(&QueryRecord) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(records.iter().map(f)))
    };
    let int = |f: fn(&QueryRecord) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(records.iter().map(f)))
    };
    let submitted: TimestampMillisecondArray = records
        .iter()
        .map(|r| {
            DateTime::parse_from_rfc3339(&r.submitted_at)
                .ok()
                .map(|t| t.timestamp_millis())
        })
        .collect();
    let columns: Vec<ArrayRef> = vec![
        text(|r| &r.query_id),
        text(|r| &r.user),
        text(|r| &r.database),
        text(|r| &r.sql),
        text(|r| &r.state),
        Arc::new(submitted.with_timezone("UTC")),
        int(|r| r.queued_ms),
        int(|r| r.execution_ms),
        int(|r| r.rows),
        Arc::new(StringArray::from(
            records.iter().map(|r| r.error.clone()).collect::<Vec<_>>(),
        )),
        text(|r| &r.stats.front_door),
        int(|r| r.stats.planning_ms),
        int(|r| r.stats.bytes_returned),
        int(|r| r.stats.bytes_scanned),
        int(|r| r.stats.files_scanned),
        int(|r| r.stats.partitions_scanned),
        int(|r| r.stats.partitions_pruned),
        Arc::new(StringArray::from(
            records
                .iter()
                .map(|r| r.stats.materialized_view.clone())
                .collect::<Vec<_>>(),
        )),
        Arc::new(BooleanArray::from(
            records
                .iter()
                .map(|r| r.stats.result_cache_hit)
                .collect::<Vec<_>>(),
        )),
        int(|r| r.stats.peak_memory_bytes),
        int(|r| r.stats.spilled_bytes),
    ];
    Ok(RecordBatch::try_new(queries_schema(), columns)?)
}
