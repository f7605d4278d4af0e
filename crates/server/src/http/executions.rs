//! Asynchronous executions, as Athena's API has them, for callers that must not hold a
//! connection open while a query runs (a function with a short time limit, a job that
//! polls):
//!
//! - `POST /v1/queries` with the body of `POST /v1/query` (without `max_rows`) plans the
//!   statement (bad SQL or an unknown table is answered at once, 400/404), starts it and
//!   answers `202 {"query_id", "state"}`; a full admission queue is `429` at once.
//! - `GET /v1/queries/{id}`: its state (`QUEUED`, `RUNNING`, `SUCCEEDED`, `FAILED`,
//!   `CANCELLED`), the error of a failed one, and its statistics from the query history.
//! - `GET /v1/queries/{id}/results?page_size=&page_token=`: a page of a succeeded
//!   query's rows, in the format `Accept` asks for (as `POST /v1/query`), with the next
//!   page's token (`next_page_token` in JSON, the `Tarn-Next-Page-Token` header in the
//!   other formats; none after the last page).
//! - `DELETE /v1/queries/{id}`: cancels it (a query that has ended keeps its state).
//!
//! Each execution is a folder `<warehouse>/_query_results/<id>/`: `execution.json` (who ran
//! what, its state, when it expires) and `result.parquet` (every row, with Arrow's types).
//! Both outlive a restart of the server, so results stay pageable; a query the server was
//! running when it stopped reads as `FAILED`. Folders are removed after the retention
//! period (`--http-result-retention`). Only the user who started an execution, or an
//! admin, can see it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use datafusion::execution::SendableRecordBatchStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::query::{
    Api, Format, QueryRequest, ResultWriter, error_response, plan, respond, status_of,
};
use crate::auth::{Caller, Role};
use tarn_lake::engine::Engine;
use tarn_lake::error::{Error, Result};

/// Rows a page has when the request does not say.
const DEFAULT_PAGE: usize = 1_000;

/// How long `POST /v1/queries` waits for the statement to be admitted, so a full queue is
/// refused with 429 rather than as a failed execution.
const ADMISSION_WAIT: Duration = Duration::from_millis(250);

/// How long `DELETE` waits for a cancelled query to record its end.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// How often expired executions are removed.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// The store of executions, and those this server is running.
#[derive(Debug)]
pub struct Executions {
    store: Arc<dyn ObjectStore>,
    /// `<warehouse>/_query_results` inside `store`.
    root: Path,
    /// Where results are, as a URL (what `GET /v1/queries/{id}` reports).
    root_url: String,
    retention: chrono::TimeDelta,
    running: Mutex<HashMap<String, Running>>,
    /// The folder of `root` on a local file system (whose empty folders are removed too).
    local_root: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone)]
struct Running {
    cancel: CancellationToken,
    /// Turns true when the execution has recorded its end.
    ended: tokio::sync::watch::Receiver<bool>,
}

/// An execution's state, as Athena names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum ExecutionState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl ExecutionState {
    fn ended(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// Why an execution failed (`code` as in `ErrorDetail`, or `CANCELLED`, `SERVER_STOPPED`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Failure {
    code: String,
    message: String,
}

/// `execution.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Execution {
    query_id: String,
    user: String,
    sql: String,
    database: String,
    state: ExecutionState,
    submitted_at: String,
    completed_at: Option<String>,
    error: Option<Failure>,
    row_count: Option<u64>,
    result_bytes: Option<u64>,
    expires_at: String,
}

impl Execution {
    /// Whether its retention is over at `now`.
    fn expired(&self, now: DateTime<Utc>) -> bool {
        DateTime::parse_from_rfc3339(&self.expires_at).is_ok_and(|at| at.with_timezone(&Utc) <= now)
    }
}

/// The query string of `GET /v1/queries/{id}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct StatusRequest {
    /// Wait up to this long (at most 60 s) for the query to end before answering (a long
    /// poll), e.g. `20s`.
    wait: Option<String>,
}

/// The longest a status request may wait for a query to end.
const LONGEST_WAIT: Duration = Duration::from_secs(60);

/// The query string of `GET /v1/queries/{id}/results`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageRequest {
    /// Rows a page has (default 1,000; at most the server's `--http-max-rows`).
    page_size: Option<usize>,
    /// The previous page's `next_page_token` (none for the first page).
    page_token: Option<String>,
}

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Executions {
    /// The executions kept under `engine`'s warehouse for `retention`; removes expired
    /// ones now and every ten minutes.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] without a warehouse, or when its store cannot be set up.
    pub fn new(engine: &Engine, retention: Duration) -> Result<Arc<Self>> {
        let location = engine.warehouse_prefix(&["_query_results"])?;
        let store = engine.stores().store_for(&location)?;
        let retention = chrono::TimeDelta::from_std(retention).map_err(|_| {
            Error::InvalidArgument("--http-result-retention is too long".to_string())
        })?;
        let executions = Arc::new(Self {
            store,
            root: location.prefix(),
            root_url: location.to_string(),
            retention,
            running: Mutex::new(HashMap::new()),
            local_root: location.url.to_file_path().ok(),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&executions);
            runtime.spawn(async move {
                let mut every = tokio::time::interval(SWEEP_EVERY);
                loop {
                    every.tick().await;
                    let Some(executions) = weak.upgrade() else {
                        return;
                    };
                    match executions.sweep().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(removed = n, "removed expired query results"),
                        Err(e) => tracing::warn!(error = %e, "removing expired query results"),
                    }
                }
            });
        }
        Ok(executions)
    }

    fn folder(&self, id: &str) -> Path {
        self.root.clone().join(id)
    }

    fn manifest_path(&self, id: &str) -> Path {
        self.folder(id).join("execution.json")
    }

    fn result_path(&self, id: &str) -> Path {
        self.folder(id).join("result.parquet")
    }

    async fn write(&self, execution: &Execution) -> Result<()> {
        let path = self.manifest_path(&execution.query_id);
        let body = serde_json::to_vec_pretty(execution)
            .map_err(|e| Error::Internal(format!("writing {path}: {e}")))?;
        self.store
            .put(&path, body.into())
            .await
            .map_err(|e| store_error(&path, e))?;
        Ok(())
    }

    /// Execution `id`, as `caller` may see it (another user's reads as unknown).
    async fn read(&self, id: &str, caller: &Caller) -> Result<Execution> {
        let unknown = || {
            Error::NotFound(format!(
                "no query execution of yours has id '{id}' (results are kept for {}); start \
                 one with POST /v1/queries",
                humanize(self.retention)
            ))
        };
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(unknown());
        }
        // Whether it runs here is looked at first: an execution records its end before it
        // leaves `running`, so one not running now has its final state in the manifest.
        let live = self.running(id).is_some();
        let path = self.manifest_path(id);
        let bytes = match self.store.get(&path).await {
            Ok(found) => found.bytes().await.map_err(|e| store_error(&path, e))?,
            Err(object_store::Error::NotFound { .. }) => return Err(unknown()),
            Err(e) => return Err(store_error(&path, e)),
        };
        let mut execution: Execution = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Internal(format!("{path} cannot be read: {e}")))?;
        if execution.user != caller.name && !matches!(caller.role, Role::Admin) {
            return Err(unknown());
        }
        // An ended execution past its retention is gone, even in the moment before it
        // leaves `running` (a long poll woken by its end reads it then).
        if (!live || execution.state.ended()) && execution.expired(Utc::now()) {
            return Err(unknown());
        }
        if !live && !execution.state.ended() {
            execution.state = ExecutionState::Failed;
            execution.error = Some(Failure {
                code: "SERVER_STOPPED".into(),
                message: "the server stopped before this query ended; run it again".into(),
            });
        }
        Ok(execution)
    }

    fn running(&self, id: &str) -> Option<Running> {
        self.running.lock().ok()?.get(id).cloned()
    }

    /// Removes the executions past their expiry; returns how many.
    async fn sweep(&self) -> Result<usize> {
        let manifests: Vec<Path> = self
            .store
            .list(Some(&self.root))
            .map_ok(|meta| meta.location)
            .try_filter(|p| futures::future::ready(p.filename() == Some("execution.json")))
            .try_collect()
            .await
            .map_err(|e| store_error(&self.root, e))?;
        let now = Utc::now();
        let mut removed = 0;
        for path in manifests {
            let Ok(found) = self.store.get(&path).await else {
                continue;
            };
            let Ok(bytes) = found.bytes().await else {
                continue;
            };
            let Ok(execution) = serde_json::from_slice::<Execution>(&bytes) else {
                continue;
            };
            if !execution.expired(now) || self.running(&execution.query_id).is_some() {
                continue;
            }
            let folder = self.folder(&execution.query_id);
            let files: Vec<Path> = self
                .store
                .list(Some(&folder))
                .map_ok(|meta| meta.location)
                .try_collect()
                .await
                .map_err(|e| store_error(&folder, e))?;
            // The manifest last, so a folder half removed is still found next time.
            for file in files.iter().filter(|f| **f != path).chain([&path]) {
                match self.store.delete(file).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(store_error(file, e)),
                }
            }
            if let Some(local) = &self.local_root {
                let _ = std::fs::remove_dir(local.join(&execution.query_id));
            }
            removed += 1;
        }
        Ok(removed)
    }

    /// Streams every row of `stream` into the execution's `result.parquet`; returns the
    /// rows and bytes written.
    async fn store_result(
        &self,
        id: &str,
        mut stream: SendableRecordBatchStream,
    ) -> Result<(u64, u64)> {
        let path = self.result_path(id);
        let sink = object_store::buffered::BufWriter::new(Arc::clone(&self.store), path.clone());
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .build();
        let mut writer =
            parquet::arrow::AsyncArrowWriter::try_new(sink, stream.schema(), Some(props))
                .map_err(|e| Error::Internal(format!("writing {path}: {e}")))?;
        let mut rows = 0u64;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(Error::from)?;
            rows += batch.num_rows() as u64;
            writer
                .write(&batch)
                .await
                .map_err(|e| Error::Internal(format!("writing {path}: {e}")))?;
        }
        writer
            .close()
            .await
            .map_err(|e| Error::Internal(format!("writing {path}: {e}")))?;
        let size = self
            .store
            .head(&path)
            .await
            .map_err(|e| store_error(&path, e))?
            .size;
        Ok((rows, size))
    }
}

/// A query string that does not parse.
fn bad_query(e: QueryRejection) -> Error {
    Error::InvalidArgument(format!(
        "the query string is not understood: {}",
        e.body_text()
    ))
}

fn store_error(path: &Path, source: object_store::Error) -> Error {
    Error::ObjectStore {
        location: path.to_string(),
        source,
    }
}

/// `delta` as people write it (`1d`, `12h`, `30m`).
fn humanize(delta: chrono::TimeDelta) -> String {
    let secs = delta.num_seconds();
    match secs {
        0 => "0s".to_string(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

impl Api {
    fn executions(&self) -> Result<&Arc<Executions>> {
        self.executions.as_ref().ok_or_else(|| {
            Error::InvalidArgument(
                "asynchronous executions need a warehouse for their results; start Tarn with \
                 --warehouse"
                    .into(),
            )
        })
    }
}

/// `POST /v1/queries`: plans a statement, starts it and answers its id at once.
#[utoipa::path(post, path = "/v1/queries", tag = "queries", request_body = QueryRequest,
    responses(
        (status = 202, description = "Started; poll `GET /v1/queries/{id}`", body = Started,
         headers(("location" = String, description = "The execution's URL"))),
        super::openapi::Errors),
    security((), ("bearer" = []), ("basic" = [])))]
pub(crate) async fn start(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    match start_execution(&api, peer, &headers, &body).await {
        Ok(response) => response,
        Err(e) => error_response(e),
    }
}

async fn start_execution(
    api: &Api,
    peer: std::net::SocketAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response> {
    let executions = Arc::clone(api.executions()?);
    let caller = api.authenticate(headers)?;
    let request = QueryRequest::parse(body)?;
    if request.max_rows.is_some() {
        return Err(Error::InvalidArgument(
            "an execution keeps every row of its result; page through them with \
             GET /v1/queries/{id}/results?page_size=N instead of max_rows"
                .into(),
        ));
    }
    let planned = plan(api, caller.clone(), peer, headers, request).await?;
    let id = planned
        .engine
        .query_id()
        .ok_or_else(|| Error::Internal("a planned request has no query id".into()))?;
    let submitted = Utc::now();
    let execution = Execution {
        query_id: id.clone(),
        user: caller.name.clone(),
        sql: planned.sql().to_string(),
        database: planned.engine.default_database(),
        state: ExecutionState::Queued,
        submitted_at: submitted.to_rfc3339_opts(SecondsFormat::Millis, true),
        completed_at: None,
        error: None,
        row_count: None,
        result_bytes: None,
        expires_at: (submitted + executions.retention).to_rfc3339_opts(SecondsFormat::Millis, true),
    };
    executions.write(&execution).await?;
    let cancel = CancellationToken::new();
    let (ended_tx, ended) = tokio::sync::watch::channel(false);
    if let Ok(mut running) = executions.running.lock() {
        running.insert(
            id.clone(),
            Running {
                cancel: cancel.clone(),
                ended,
            },
        );
    }
    let (started_tx, started) = tokio::sync::oneshot::channel();
    tokio::spawn(run(
        Arc::clone(&executions),
        planned,
        execution,
        cancel,
        started_tx,
        ended_tx,
    ));
    // A refusal by a full queue is instant: answer it as the synchronous API does.
    if let Ok(Ok(e)) = tokio::time::timeout(ADMISSION_WAIT, started).await
        && status_of(&e).0 == StatusCode::TOO_MANY_REQUESTS
    {
        return Err(e);
    }
    let mut response = (
        StatusCode::ACCEPTED,
        Json(Started {
            query_id: id.clone(),
            state: ExecutionState::Queued,
        }),
    )
        .into_response();
    if let Ok(location) = axum::http::HeaderValue::from_str(&format!("/v1/queries/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Runs an execution to its end and records how it ended.
async fn run(
    executions: Arc<Executions>,
    planned: super::query::Planned,
    mut execution: Execution,
    cancel: CancellationToken,
    started: tokio::sync::oneshot::Sender<Error>,
    ended: tokio::sync::watch::Sender<bool>,
) {
    let id = execution.query_id.clone();
    let work = async {
        let stream = match planned.start(None).await {
            Ok(stream) => stream,
            Err(e) => {
                let failure = Failure {
                    code: status_of(&e).1.to_string(),
                    message: e.to_string(),
                };
                let _ = started.send(e);
                return Err(failure);
            }
        };
        drop(started);
        executions
            .store_result(&id, stream)
            .await
            .map_err(|e| Failure {
                code: status_of(&e).1.to_string(),
                message: e.to_string(),
            })
    };
    // Cancelling drops the work, and with it the query's stream: its tasks stop.
    let outcome = tokio::select! {
        biased;
        () = cancel.cancelled() => None,
        outcome = work => Some(outcome),
    };
    match outcome {
        Some(Ok((rows, bytes))) => {
            execution.state = ExecutionState::Succeeded;
            execution.row_count = Some(rows);
            execution.result_bytes = Some(bytes);
        }
        Some(Err(failure)) => {
            execution.state = ExecutionState::Failed;
            execution.error = Some(failure);
        }
        None => {
            execution.state = ExecutionState::Cancelled;
            execution.error = Some(Failure {
                code: "CANCELLED".into(),
                message: "the query was cancelled (DELETE /v1/queries/{id})".into(),
            });
        }
    }
    if execution.state != ExecutionState::Succeeded {
        let path = executions.result_path(&id);
        if let Err(e) = executions.store.delete(&path).await
            && !matches!(e, object_store::Error::NotFound { .. })
        {
            tracing::warn!(query_id = %id, error = %e, "removing a partial query result");
        }
    }
    execution.completed_at = Some(now_text());
    if let Err(e) = executions.write(&execution).await {
        tracing::warn!(query_id = %id, error = %e, "recording how a query execution ended");
    }
    if let Ok(mut running) = executions.running.lock() {
        running.remove(&id);
    }
    let _ = ended.send(true);
}

/// `GET /v1/queries/{id}`: an execution's state and statistics.
#[utoipa::path(get, path = "/v1/queries/{id}", tag = "queries",
    params(("id" = String, Path, description = "The id `POST /v1/queries` answered"), StatusRequest),
    responses((status = 200, body = ExecutionView), super::openapi::Errors),
    security((), ("bearer" = []), ("basic" = [])))]
pub(crate) async fn status(
    State(api): State<Api>,
    UrlPath(id): UrlPath<String>,
    request: std::result::Result<Query<StatusRequest>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let Query(request) = request.map_err(bad_query)?;
        let executions = api.executions()?;
        let caller = api.authenticate(&headers)?;
        let wait = match &request.wait {
            Some(text) => tarn_lake::engine::limits::parse_duration(text)?,
            None => Duration::ZERO,
        };
        if wait > LONGEST_WAIT {
            return Err(Error::InvalidArgument(format!(
                "wait={} is longer than a status request may wait ({}s); poll again instead",
                request.wait.as_deref().unwrap_or_default(),
                LONGEST_WAIT.as_secs()
            )));
        }
        let mut execution = executions.read(&id, &caller).await?;
        if !wait.is_zero() && !execution.state.ended() {
            if let Some(mut running) = executions.running(&id) {
                let _ = tokio::time::timeout(wait, running.ended.wait_for(|ended| *ended)).await;
            }
            execution = executions.read(&id, &caller).await?;
        }
        describe(&api.engine, executions, execution).await
    };
    match result.await {
        Ok(body) => Json(body).into_response(),
        Err(e) => error_response(e),
    }
}

/// The execution as `GET /v1/queries/{id}` shows it, with its live state and statistics.
async fn describe(
    engine: &Engine,
    executions: &Executions,
    execution: Execution,
) -> Result<ExecutionView> {
    let record = engine.query_record(&execution.query_id).await?;
    let mut state = execution.state;
    if !state.ended() {
        state = match record.as_ref().map(|r| r.state.as_str()) {
            Some("running") => ExecutionState::Running,
            _ => ExecutionState::Queued,
        };
    }
    let statistics = record.map(|r| Statistics {
        queued_ms: r.queued_ms,
        planning_ms: r.stats.planning_ms,
        execution_ms: r.execution_ms,
        rows: r.rows,
        bytes_scanned: r.stats.bytes_scanned,
        files_scanned: r.stats.files_scanned,
        partitions_scanned: r.stats.partitions_scanned,
        partitions_pruned: r.stats.partitions_pruned,
        materialized_view: r.stats.materialized_view,
        result_cache_hit: r.stats.result_cache_hit,
        peak_memory_bytes: r.stats.peak_memory_bytes,
        spilled_bytes: r.stats.spilled_bytes,
    });
    let result = (state == ExecutionState::Succeeded).then(|| StoredResult {
        location: format!(
            "{}{}/result.parquet",
            executions.root_url, execution.query_id
        ),
        row_count: execution.row_count.unwrap_or(0),
        bytes: execution.result_bytes.unwrap_or(0),
        expires_at: execution.expires_at.clone(),
    });
    Ok(ExecutionView {
        query_id: execution.query_id,
        state,
        error: execution.error,
        sql: execution.sql,
        database: execution.database,
        user: execution.user,
        submitted_at: execution.submitted_at,
        completed_at: execution.completed_at,
        statistics,
        result,
    })
}

/// What `POST /v1/queries` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Started {
    query_id: String,
    state: ExecutionState,
}

/// An execution as `GET /v1/queries/{id}` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ExecutionView {
    query_id: String,
    state: ExecutionState,
    /// Why it failed or was cancelled.
    error: Option<Failure>,
    sql: String,
    database: String,
    user: String,
    /// RFC 3339, UTC.
    submitted_at: String,
    completed_at: Option<String>,
    /// From the query history (`system.queries`); none until the statement starts.
    statistics: Option<Statistics>,
    /// Where a succeeded execution's rows are.
    result: Option<StoredResult>,
}

/// What a statement cost, from the query history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Statistics {
    queued_ms: i64,
    planning_ms: i64,
    execution_ms: i64,
    rows: i64,
    bytes_scanned: i64,
    files_scanned: i64,
    partitions_scanned: i64,
    partitions_pruned: i64,
    /// The materialized view that answered (`db.view`).
    materialized_view: Option<String>,
    result_cache_hit: bool,
    peak_memory_bytes: i64,
    spilled_bytes: i64,
}

/// A stored result.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct StoredResult {
    /// The Parquet file, readable by any Parquet reader with access to the warehouse.
    location: String,
    row_count: u64,
    bytes: u64,
    /// When it is removed (RFC 3339).
    expires_at: String,
}

/// `DELETE /v1/queries/{id}`: cancels a query that has not ended; answers its state.
#[utoipa::path(delete, path = "/v1/queries/{id}", tag = "queries",
    params(("id" = String, Path, description = "The id `POST /v1/queries` answered")),
    responses((status = 200, body = ExecutionView), super::openapi::Errors),
    security((), ("bearer" = []), ("basic" = [])))]
pub(crate) async fn cancel(
    State(api): State<Api>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let executions = api.executions()?;
        let caller = api.authenticate(&headers)?;
        executions.read(&id, &caller).await?;
        if let Some(mut running) = executions.running(&id) {
            running.cancel.cancel();
            let _ = tokio::time::timeout(CANCEL_WAIT, running.ended.wait_for(|ended| *ended)).await;
        }
        let execution = executions.read(&id, &caller).await?;
        describe(&api.engine, executions, execution).await
    };
    match result.await {
        Ok(body) => Json(body).into_response(),
        Err(e) => error_response(e),
    }
}

/// `GET /v1/queries/{id}/results`: a page of a succeeded execution's rows.
#[utoipa::path(get, path = "/v1/queries/{id}/results", tag = "queries",
    params(("id" = String, Path, description = "The id `POST /v1/queries` answered"), PageRequest),
    responses(
        (status = 200, description = "The page's rows", content(
            (super::openapi::QueryResult = "application/json"),
            (String = "application/x-ndjson"),
            (String = "text/csv"),
            (Vec<u8> = "application/vnd.apache.arrow.stream")),
         headers(("tarn-next-page-token" = String,
                  description = "The next page's token (not in JSON, which has next_page_token)"))),
        super::openapi::Errors),
    security((), ("bearer" = []), ("basic" = [])))]
pub(crate) async fn results(
    State(api): State<Api>,
    UrlPath(id): UrlPath<String>,
    page: std::result::Result<Query<PageRequest>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let page = match page {
        Ok(Query(page)) => page,
        Err(e) => return error_response(bad_query(e)),
    };
    match page_of(&api, &id, &page, &headers).await {
        Ok(response) => response,
        Err(e) => error_response(e),
    }
}

async fn page_of(api: &Api, id: &str, page: &PageRequest, headers: &HeaderMap) -> Result<Response> {
    let executions = api.executions()?;
    let caller = api.authenticate(headers)?;
    let format = Format::of(headers)?;
    let execution = executions.read(id, &caller).await?;
    let execution = match execution.state {
        ExecutionState::Succeeded => execution,
        _ => {
            let shown = describe(&api.engine, executions, execution).await?;
            let state = serde_json::to_value(shown.state).unwrap_or_default();
            return Err(Error::Conflict(format!(
                "query {id} is {}, so it has no results to read{}; poll GET \
                 /v1/queries/{id} until it is SUCCEEDED",
                state.as_str().unwrap_or("not done"),
                shown
                    .error
                    .map(|e| format!(" ({})", e.message))
                    .unwrap_or_default()
            )));
        }
    };
    let size = page.page_size.unwrap_or(DEFAULT_PAGE);
    if size == 0 || size > api.max_rows {
        return Err(Error::InvalidArgument(format!(
            "page_size {size} is not between 1 and this server's --http-max-rows ({})",
            api.max_rows
        )));
    }
    let offset = match &page.page_token {
        None => 0,
        Some(token) => token.parse::<usize>().map_err(|_| {
            Error::InvalidArgument(format!(
                "page_token '{token}' is not one this API gave; start from the first page \
                 (no page_token) and follow next_page_token"
            ))
        })?,
    };
    let total = usize::try_from(execution.row_count.unwrap_or(0)).unwrap_or(usize::MAX);
    if offset > total {
        return Err(Error::InvalidArgument(format!(
            "page_token '{offset}' is past the result's {total} rows"
        )));
    }
    let path = executions.result_path(id);
    let size_on_store = execution.result_bytes.unwrap_or(0);
    let reader = StoredFile {
        store: Arc::clone(&executions.store),
        path: path.clone(),
        size: size_on_store,
    };
    let builder = parquet::arrow::ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| Error::Internal(format!("reading {path}: {e}")))?;
    let schema: SchemaRef = Arc::clone(builder.schema());
    let rows = builder
        .with_offset(offset)
        .with_limit(size)
        .with_batch_size(size.clamp(1, 8_192))
        .build()
        .map_err(|e| Error::Internal(format!("reading {path}: {e}")))?
        .map_err(move |e| datafusion::error::DataFusionError::External(Box::new(e)));
    let stream: SendableRecordBatchStream = Box::pin(
        datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(Arc::clone(&schema), rows),
    );
    let next = (offset + size < total).then(|| (offset + size).to_string());
    let writer = ResultWriter::new(format, schema, size, id.to_string()).page(next);
    Ok(respond(writer, stream))
}

/// A stored result, read through its object store a range at a time.
struct StoredFile {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

impl parquet::arrow::async_reader::AsyncFileReader for StoredFile {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        Box::pin(async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
        })
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a parquet::arrow::arrow_reader::ArrowReaderOptions>,
    ) -> futures::future::BoxFuture<
        'a,
        parquet::errors::Result<Arc<parquet::file::metadata::ParquetMetaData>>,
    > {
        Box::pin(async move {
            let size = self.size;
            let metadata = parquet::file::metadata::ParquetMetaDataReader::new()
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        })
    }
}
