//! The query history: every statement a front door runs through the engine is recorded in
//! the catalog as it ends (who, which database, the SQL, how it ended, how long it waited
//! and ran, rows returned, the error), kept for a retention period, and readable as
//! `system.queries`, where readers see their own statements and admins everyone's.
//!
//! Records are written in the background so a query's end never waits for the catalog;
//! a read of `system.queries` first waits (briefly) for the writes in flight, so a client
//! sees its previous statement.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use tokio::sync::Notify;

use crate::catalog::{Catalog, QueryRecord};
use crate::engine::metrics::Outcome;

/// Who runs a statement and what it is: set by the front door on the engine it plans with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryLabel {
    /// The authenticated user (`anonymous` without authentication, `cli` for commands).
    pub user: String,
    /// Whether the user may see everyone's statements in `system.queries`.
    pub admin: bool,
    /// The statement's text, as the client sent it.
    pub sql: String,
}

/// Where records go.
#[derive(Debug)]
pub(crate) struct History {
    catalog: Catalog,
    /// How long records are kept (`None`: the history is off).
    retention: Option<chrono::TimeDelta>,
    writing: AtomicUsize,
    written: Notify,
}

/// How long a read of `system.queries` waits for records still being written.
const SETTLE: Duration = Duration::from_secs(5);

/// Rows `system.queries` shows at most (the newest).
const SHOWN: i64 = 10_000;

impl History {
    pub(crate) fn new(catalog: Catalog, retention: Option<chrono::TimeDelta>) -> Self {
        Self {
            catalog,
            retention,
            writing: AtomicUsize::new(0),
            written: Notify::new(),
        }
    }

    /// Records how a labelled statement ended (in the background).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        self: &Arc<Self>,
        label: &QueryLabel,
        database: &str,
        outcome: Outcome,
        submitted: DateTime<Utc>,
        queued: Duration,
        ran: Duration,
        rows: u64,
        error: Option<String>,
    ) {
        let Some(retention) = self.retention else {
            return;
        };
        let record = QueryRecord {
            query_id: uuid::Uuid::new_v4().to_string(),
            user: label.user.clone(),
            database: database.to_string(),
            sql: label.sql.clone(),
            state: outcome.label().to_string(),
            submitted_at: submitted.to_rfc3339_opts(SecondsFormat::Millis, true),
            queued_ms: millis(queued),
            execution_ms: millis(ran),
            rows: i64::try_from(rows).unwrap_or(i64::MAX),
            error,
        };
        let forget_before = (Utc::now() - retention).to_rfc3339_opts(SecondsFormat::Millis, true);
        self.writing.fetch_add(1, Ordering::SeqCst);
        let history = Arc::clone(self);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.done_writing();
            return;
        };
        runtime.spawn(async move {
            if let Err(e) = history
                .catalog
                .record_query(&record, Some(&forget_before))
                .await
            {
                tracing::warn!(error = %e, "could not record a query in the history");
            }
            history.done_writing();
        });
    }

    fn done_writing(&self) {
        if self.writing.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.written.notify_waiters();
        }
    }

    /// Waits until the records being written are in the catalog (at most [`SETTLE`]).
    pub(crate) async fn settled(&self) {
        let wait = async {
            loop {
                let notified = self.written.notified();
                if self.writing.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(SETTLE, wait).await;
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
        let records = self
            .history
            .catalog
            .query_history(only, SHOWN)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
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
    ];
    Ok(RecordBatch::try_new(queries_schema(), columns)?)
}
