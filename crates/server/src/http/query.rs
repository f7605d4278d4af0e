//! The synchronous query API for functions and scripts that cannot carry a Flight SQL
//! driver: `POST /v1/query` with `{"sql": …, "database": …, "parameters": [...],
//! "max_rows": …}`, answered in the format the `Accept` header asks for, streamed as the
//! query runs:
//!
//! - `application/json` (the default): `{"query_id", "columns": [{"name", "type",
//!   "nullable"}], "rows": [{column: value}], "row_count", "truncated"}`. 64-bit integers
//!   and decimals are strings (every JSON parser reads them exactly; a JavaScript number
//!   holds 53 bits), the other numbers and booleans are JSON's own, dates and timestamps
//!   ISO 8601 strings, nulls `null`; `columns` gives each column's Arrow type.
//! - `application/x-ndjson`: one object a row, as in `rows`.
//! - `text/csv`: a header line, then the rows.
//! - `application/vnd.apache.arrow.stream`: Arrow's IPC stream, with the exact types.
//!
//! A query returns at most `max_rows` rows (default [`DEFAULT_ROWS`], at most the server's
//! `--http-max-rows`); JSON says `"truncated": true` when it had more (the other formats
//! stop at the limit: ask for one row more than you need to tell). Callers authenticate as over Flight SQL
//! (`Authorization: Bearer <token>` or `Basic`); statements go through the same admission,
//! time limit and history (front door `http`). Errors are JSON `{"error": {"code",
//! "message"}}` with the HTTP status of their kind.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use serde::Deserialize;

use crate::auth::Authenticator;
use tarn_lake::engine::history::QueryLabel;
use tarn_lake::engine::{Engine, Statement};
use tarn_lake::error::{Error, Result};

/// Rows a query returns when the request does not say.
pub const DEFAULT_ROWS: usize = 10_000;

/// What the query routes share.
#[derive(Clone)]
pub(crate) struct Api {
    pub engine: Engine,
    pub auth: Arc<Authenticator>,
    /// The most rows one request may ask for (`--http-max-rows`).
    pub max_rows: usize,
    /// Asynchronous executions (`None` without a warehouse for their results).
    pub executions: Option<Arc<super::executions::Executions>>,
}

impl QueryRequest {
    /// The request in a body of `POST /v1/query` or `POST /v1/queries`.
    pub(crate) fn parse(body: &[u8]) -> Result<QueryRequest> {
        serde_json::from_slice(body).map_err(|e| {
            Error::InvalidArgument(format!(
                "the body is not a query request ({e}); send a JSON object with \"sql\" and, \
                 if needed, \"database\", \"parameters\" (a list), \"settings\" and (for \
                 /v1/query) \"max_rows\""
            ))
        })
    }
}

impl Api {
    /// The caller of a request, from its `Authorization` header.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<crate::auth::Caller> {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        self.auth.authenticate(authorization)
    }
}

/// The body of `POST /v1/query` and `POST /v1/queries`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueryRequest {
    /// One SQL statement; `$1`, `$2`, … or `?` for parameters.
    pub sql: String,
    /// The database unqualified table names resolve in (`default` when not given).
    #[serde(default)]
    database: Option<String>,
    /// The parameters' values, in order: strings, numbers, booleans or null.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    parameters: Vec<serde_json::Value>,
    /// The most rows to return (synchronous queries only; default 10,000, at most the
    /// server's `--http-max-rows`).
    #[serde(default)]
    pub max_rows: Option<usize>,
    /// Session settings for this request (`time_zone`, `target_partitions`,
    /// `query_timeout`, `tarn.*` switches), as `SET` would change them.
    #[serde(default)]
    #[schema(value_type = Object)]
    settings: std::collections::BTreeMap<String, serde_json::Value>,
}

/// The formats a result can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    NdJson,
    Csv,
    Arrow,
}

impl Format {
    /// The first format of the `Accept` header Tarn writes (JSON when none is named).
    pub(crate) fn of(headers: &HeaderMap) -> Result<Format> {
        let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
            return Ok(Format::Json);
        };
        for kind in accept.split(',') {
            let kind = kind
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            match kind.as_str() {
                "application/json" | "*/*" | "application/*" | "" => return Ok(Format::Json),
                "application/x-ndjson" | "application/jsonl" => return Ok(Format::NdJson),
                "text/csv" => return Ok(Format::Csv),
                "application/vnd.apache.arrow.stream" => return Ok(Format::Arrow),
                _ => {}
            }
        }
        Err(Error::InvalidArgument(format!(
            "Accept: {accept} names no format Tarn writes; ask for application/json, \
             application/x-ndjson, text/csv or application/vnd.apache.arrow.stream"
        )))
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::NdJson => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Arrow => "application/vnd.apache.arrow.stream",
        }
    }
}

/// `POST /v1/query`: runs a statement and streams its rows in the `Accept` format.
#[utoipa::path(post, path = "/v1/query", tag = "queries", request_body = QueryRequest,
    responses(
        (status = 200, description = "The rows, streamed as the query runs", content(
            (super::openapi::QueryResult = "application/json"),
            (String = "application/x-ndjson"),
            (String = "text/csv"),
            (Vec<u8> = "application/vnd.apache.arrow.stream"))),
        super::openapi::Errors),
    security((), ("bearer" = []), ("basic" = [])))]
pub(crate) async fn query(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    match run(&api, peer, &headers, &body).await {
        Ok(response) => response,
        Err(e) => error_response(e),
    }
}

async fn run(
    api: &Api,
    peer: std::net::SocketAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response> {
    let caller = api.authenticate(headers)?;
    let format = Format::of(headers)?;
    let (request, limit) = parse_request(api, body)?;
    let planned = plan(api, caller, peer, headers, request).await?;
    let stream = planned.start(Some(limit)).await?;
    let query_id = planned.engine.query_id().unwrap_or_default();
    Ok(respond(
        ResultWriter::new(format, stream.schema(), limit, query_id),
        stream,
    ))
}

/// A request's statement, planned for its caller.
pub(crate) struct Planned {
    /// The engine it runs on: the request's database and settings, labelled for the history.
    pub engine: Engine,
    statement: Statement,
    params: Option<RecordBatch>,
    sql: String,
}

/// Plans `request` for `caller` (a planning error is recorded in the history and returned).
pub(crate) async fn plan(
    api: &Api,
    caller: crate::auth::Caller,
    peer: std::net::SocketAddr,
    headers: &HeaderMap,
    request: QueryRequest,
) -> Result<Planned> {
    let engine = with_settings(&api.engine, &request.settings).await?;
    let engine = match request.database.as_deref().filter(|d| !d.is_empty()) {
        Some(db) => engine.in_database(db).await?,
        None => engine,
    };
    let engine = engine.labelled(QueryLabel::new(
        &caller.name,
        matches!(caller.role, crate::auth::Role::Admin),
        &request.sql,
        "http",
    ));
    api.engine
        .client_call(&caller.name, &client_address(peer, headers), "http");
    let params = parameter_row(&request.parameters)?;
    let sql = crate::flight::handle::rewrite_question_marks(&request.sql);
    let statement = match engine.prepare(&sql, params.as_ref()).await {
        Ok(Statement::Command(command)) if command.is_update() => {
            let allowed = caller.require_admin(command.kind());
            if let Err(e) = allowed {
                engine.record_failure(&e);
                return Err(e);
            }
            Statement::Command(command)
        }
        Ok(statement) => statement,
        Err(e) => {
            engine.record_failure(&e);
            return Err(e);
        }
    };
    Ok(Planned {
        engine,
        statement,
        params,
        sql: request.sql,
    })
}

impl Planned {
    /// The statement's text, as the client sent it.
    pub(crate) fn sql(&self) -> &str {
        &self.sql
    }

    /// Runs the statement: a query for at most `limit` rows (all without one), a command
    /// (which an update needs an admin for) to its one batch.
    pub(crate) async fn start(&self, limit: Option<usize>) -> Result<SendableRecordBatchStream> {
        let engine = &self.engine;
        match &self.statement {
            Statement::Query(df) => start_query(engine, df.as_ref().clone(), limit).await,
            Statement::Command(command) => {
                let rows: Vec<RecordBatch> = self.params.iter().cloned().collect();
                let batch = engine
                    .recorded(engine.run_statement(command, &rows))
                    .await?;
                Ok(with_first(
                    batch.schema(),
                    Some(Ok(batch)),
                    Box::pin(futures::stream::empty()),
                ))
            }
        }
    }
}

/// `engine` with the request's session settings in force.
async fn with_settings(
    engine: &Engine,
    given: &std::collections::BTreeMap<String, serde_json::Value>,
) -> Result<Engine> {
    let mut settings = tarn_lake::engine::settings::Settings::default();
    for (name, value) in given {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Bool(_) | serde_json::Value::Number(_) => value.to_string(),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "setting '{name}' takes a string, number or boolean, not {value}"
                )));
            }
        };
        engine.set_setting(&mut settings, name, &text).await?;
    }
    engine.with_settings(&settings)
}

/// The request in the body and the rows it may return.
fn parse_request(api: &Api, body: &[u8]) -> Result<(QueryRequest, usize)> {
    let request = QueryRequest::parse(body)?;
    let limit = request.max_rows.unwrap_or(DEFAULT_ROWS);
    if limit > api.max_rows {
        return Err(Error::InvalidArgument(format!(
            "max_rows {limit} is more than this server gives one request ({}, \
             --http-max-rows); page with LIMIT and OFFSET, or use Flight SQL for large results",
            api.max_rows
        )));
    }
    Ok((request, limit))
}

/// Starts a query for at most `limit` rows (one more, to tell whether there were more)
/// and waits for its first rows: an error before them (most failures, a time limit
/// reached before any row) gets its own status; one after them ends the body.
async fn start_query(
    engine: &Engine,
    df: datafusion::dataframe::DataFrame,
    limit: Option<usize>,
) -> Result<SendableRecordBatchStream> {
    let df = match limit {
        Some(limit) => df
            .limit(0, Some(limit.saturating_add(1)))
            .map_err(Error::from)?,
        None => df,
    };
    let mut stream = engine.execute(df).await?;
    let first = match stream.next().await {
        Some(Err(e)) => return Err(Error::from(e)),
        Some(Ok(batch)) => Some(Ok(batch)),
        None => None,
    };
    Ok(with_first(stream.schema(), first, stream))
}

/// `rest` with `first` put back in front of it.
fn with_first(
    schema: SchemaRef,
    first: Option<datafusion::error::Result<RecordBatch>>,
    rest: futures::stream::BoxStream<'static, datafusion::error::Result<RecordBatch>>,
) -> SendableRecordBatchStream {
    Box::pin(
        datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(first).chain(rest),
        ),
    )
}

/// The client's address: the first `X-Forwarded-For` hop behind a proxy, else the peer.
fn client_address(peer: std::net::SocketAddr, headers: &HeaderMap) -> String {
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map_or_else(|| peer.to_string(), |v| v.trim().to_string())
}

/// The request's parameters as one row of values (`$1`, `$2`, … or `?` in order).
fn parameter_row(values: &[serde_json::Value]) -> Result<Option<RecordBatch>> {
    use arrow::array::{BooleanArray, Float64Array, Int64Array, NullArray, StringArray};
    use serde_json::Value;
    if values.is_empty() {
        return Ok(None);
    }
    let mut fields = Vec::with_capacity(values.len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        let name = format!("${}", i + 1);
        let (data_type, column): (DataType, ArrayRef) = match value {
            Value::Null => (DataType::Null, Arc::new(NullArray::new(1))),
            Value::Bool(b) => (DataType::Boolean, Arc::new(BooleanArray::from(vec![*b]))),
            Value::Number(n) => match n.as_i64() {
                Some(v) => (DataType::Int64, Arc::new(Int64Array::from(vec![v]))),
                None => (
                    DataType::Float64,
                    Arc::new(Float64Array::from(vec![n.as_f64().unwrap_or(f64::NAN)])),
                ),
            },
            Value::String(s) => (
                DataType::Utf8,
                Arc::new(StringArray::from(vec![s.as_str()])),
            ),
            Value::Array(_) | Value::Object(_) => {
                return Err(Error::InvalidArgument(format!(
                    "parameter {name} is {value}: give a string, number, boolean or null"
                )));
            }
        };
        fields.push(Field::new(name, data_type, true));
        columns.push(column);
    }
    Ok(Some(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?))
}

/// The result streamed by `writer` (in its format, at most its limit of rows).
pub(crate) fn respond(mut writer: ResultWriter, stream: SendableRecordBatchStream) -> Response {
    let format = writer.format;
    let mut headers = vec![(header::CONTENT_TYPE, format.content_type().to_string())];
    if let Some(token) = writer.next_page_token.clone().flatten() {
        headers.push((header::HeaderName::from_static(NEXT_PAGE_HEADER), token));
    }
    let head = writer.head();
    let body = futures::stream::once(async move { head })
        .chain(futures::stream::unfold(
            (stream, writer, false),
            |(mut stream, mut writer, done)| async move {
                if done {
                    return None;
                }
                if writer.full() {
                    return Some((writer.tail(None), (stream, writer, true)));
                }
                match stream.next().await {
                    Some(Ok(batch)) => {
                        let chunk = writer.batch(&batch);
                        Some((chunk, (stream, writer, false)))
                    }
                    Some(Err(e)) => {
                        let e = Error::from(e);
                        Some((writer.tail(Some(&e)), (stream, writer, true)))
                    }
                    None => Some((writer.tail(None), (stream, writer, true))),
                }
            },
        ))
        .filter_map(|chunk| async move {
            match chunk {
                Ok(bytes) if bytes.is_empty() => None,
                other => Some(other),
            }
        });
    let mut response = Body::from_stream(body).into_response();
    for (name, value) in headers {
        if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// The header that carries a page's `next_page_token` in the formats other than JSON.
pub(crate) const NEXT_PAGE_HEADER: &str = "tarn-next-page-token";

type Chunk = std::result::Result<Vec<u8>, std::io::Error>;

/// Writes a result's batches in one format, a chunk at a time.
pub(crate) struct ResultWriter {
    format: Format,
    schema: SchemaRef,
    limit: usize,
    rows: usize,
    truncated: bool,
    query_id: String,
    /// For a page of a stored result: the token of the next page (`None` after the last).
    next_page_token: Option<Option<String>>,
    ipc: Option<arrow::ipc::writer::StreamWriter<Vec<u8>>>,
}

impl ResultWriter {
    pub(crate) fn new(format: Format, schema: SchemaRef, limit: usize, query_id: String) -> Self {
        Self {
            format,
            schema,
            limit,
            rows: 0,
            truncated: false,
            query_id,
            next_page_token: None,
            ipc: None,
        }
    }

    /// The writer of a page of a stored result, followed by `next` (none after the last).
    pub(crate) fn page(self, next: Option<String>) -> Self {
        Self {
            next_page_token: Some(next),
            ..self
        }
    }

    fn full(&self) -> bool {
        self.truncated
    }

    /// What comes before the rows.
    fn head(&mut self) -> Chunk {
        match self.format {
            Format::Json => {
                let columns: Vec<serde_json::Value> = self
                    .schema
                    .fields()
                    .iter()
                    .map(|f| {
                        serde_json::json!({
                            "name": f.name(),
                            "type": f.data_type().to_string(),
                            "nullable": f.is_nullable(),
                        })
                    })
                    .collect();
                let head = serde_json::json!({"query_id": self.query_id, "columns": columns});
                let mut text = head.to_string();
                // Reopened to append the rows: `{"query_id":…,"columns":[…],"rows":[`.
                text.pop();
                text.push_str(",\"rows\":[");
                Ok(text.into_bytes())
            }
            Format::Csv => {
                let mut out = Vec::new();
                let mut writer = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                let empty = RecordBatch::new_empty(Arc::clone(&self.schema));
                writer.write(&empty).map_err(std::io::Error::other)?;
                drop(writer);
                Ok(out)
            }
            Format::NdJson => Ok(Vec::new()),
            Format::Arrow => {
                let writer = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &self.schema)
                    .map_err(std::io::Error::other)?;
                self.ipc = Some(writer);
                Ok(self.take_ipc())
            }
        }
    }

    fn take_ipc(&mut self) -> Vec<u8> {
        self.ipc
            .as_mut()
            .map(|w| std::mem::take(w.get_mut()))
            .unwrap_or_default()
    }

    /// The rows of `batch` (those within the limit).
    fn batch(&mut self, batch: &RecordBatch) -> Chunk {
        let room = self.limit - self.rows;
        if batch.num_rows() > room {
            self.truncated = true;
        }
        let batch = batch.slice(0, batch.num_rows().min(room));
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let first = self.rows == 0;
        self.rows += batch.num_rows();
        match self.format {
            Format::Json | Format::NdJson => {
                let batch = json_safe(&batch).map_err(std::io::Error::other)?;
                if self.format == Format::NdJson {
                    return json_rows::<arrow::json::writer::LineDelimited>(&batch);
                }
                let out = json_rows::<arrow::json::writer::JsonArray>(&batch)?;
                // `[row,row]` → `row,row`, after a comma if rows came before.
                let inner = out.get(1..out.len().saturating_sub(1)).unwrap_or(&[]);
                let mut chunk = Vec::with_capacity(inner.len() + 1);
                if !first {
                    chunk.push(b',');
                }
                chunk.extend_from_slice(inner);
                Ok(chunk)
            }
            Format::Csv => {
                let mut out = Vec::new();
                let mut writer = arrow::csv::WriterBuilder::new()
                    .with_header(false)
                    .build(&mut out);
                writer.write(&batch).map_err(std::io::Error::other)?;
                drop(writer);
                Ok(out)
            }
            Format::Arrow => {
                if let Some(w) = self.ipc.as_mut() {
                    w.write(&batch).map_err(std::io::Error::other)?;
                }
                Ok(self.take_ipc())
            }
        }
    }

    /// What closes the result; an error met while streaming is said in JSON formats and
    /// ends the others' bodies abruptly (a client sees a broken response, never a short
    /// one that looks whole).
    fn tail(&mut self, error: Option<&Error>) -> Chunk {
        match (self.format, error) {
            (Format::Json, _) => {
                let mut end = format!(
                    "],\"row_count\":{},\"truncated\":{}",
                    self.rows, self.truncated
                );
                if let Some(next) = &self.next_page_token {
                    end.push_str(",\"next_page_token\":");
                    end.push_str(&serde_json::json!(next).to_string());
                }
                if let Some(e) = error {
                    end.push_str(",\"error\":");
                    end.push_str(&error_json(e).to_string());
                }
                end.push('}');
                Ok(end.into_bytes())
            }
            (Format::NdJson, Some(e)) => {
                let mut line = serde_json::json!({"error": error_json(e)}).to_string();
                line.push('\n');
                Ok(line.into_bytes())
            }
            (_, Some(e)) => Err(std::io::Error::other(e.to_string())),
            (Format::Arrow, None) => {
                if let Some(w) = self.ipc.as_mut() {
                    w.finish().map_err(std::io::Error::other)?;
                }
                Ok(self.take_ipc())
            }
            (_, None) => Ok(Vec::new()),
        }
    }
}

/// `batch`'s rows as JSON objects (nulls written out) in the writer's format.
fn json_rows<F: arrow::json::writer::JsonFormat>(batch: &RecordBatch) -> Chunk {
    let mut out = Vec::new();
    let mut writer = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, F>(&mut out);
    writer.write(batch).map_err(std::io::Error::other)?;
    writer.finish().map_err(std::io::Error::other)?;
    drop(writer);
    Ok(out)
}

/// `batch` with its 64-bit integers and decimals as strings, so JSON carries them exactly.
fn json_safe(batch: &RecordBatch) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let exact_as_text = |t: &DataType| {
        matches!(
            t,
            DataType::Int64
                | DataType::UInt64
                | DataType::Decimal32(..)
                | DataType::Decimal64(..)
                | DataType::Decimal128(..)
                | DataType::Decimal256(..)
        )
    };
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| exact_as_text(f.data_type()))
    {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if exact_as_text(field.data_type()) {
            columns.push(arrow::compute::cast(column, &DataType::Utf8)?);
            fields.push(Field::new(
                field.name(),
                DataType::Utf8,
                field.is_nullable(),
            ));
        } else {
            columns.push(Arc::clone(column));
            fields.push(field.as_ref().clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// An error's HTTP status and stable code.
pub(crate) fn status_of(e: &Error) -> (StatusCode, &'static str) {
    match e {
        Error::Sql(_) => (StatusCode::BAD_REQUEST, "SQL_ERROR"),
        Error::InvalidArgument(_) | Error::InvalidLocation { .. } => {
            (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT")
        }
        Error::TableNotFound { .. } | Error::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        Error::AlreadyExists(_) => (StatusCode::CONFLICT, "ALREADY_EXISTS"),
        Error::Conflict(_) => (StatusCode::CONFLICT, "CONFLICT"),
        Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
        Error::PermissionDenied(_) => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
        Error::ResourceExhausted(m) if m.starts_with("too many queries") => {
            (StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_QUERIES")
        }
        Error::ResourceExhausted(m) if m.starts_with("stream buffers are full") => {
            (StatusCode::TOO_MANY_REQUESTS, "STREAM_BUFFERS_FULL")
        }
        Error::ResourceExhausted(_) => (StatusCode::SERVICE_UNAVAILABLE, "RESOURCE_EXHAUSTED"),
        Error::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "TIMEOUT"),
        Error::ObjectStore { .. } | Error::Io { .. } | Error::Execution(_) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "EXECUTION_ERROR")
        }
        Error::Catalog(_) | Error::Migrate(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "CATALOG_UNAVAILABLE")
        }
        Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
    }
}

pub(crate) fn error_json(e: &Error) -> serde_json::Value {
    let (_, code) = status_of(e);
    serde_json::json!({"code": code, "message": e.to_string()})
}

/// A request for a path or method the API does not have.
pub(crate) async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    error_response(Error::NotFound(format!(
        "the HTTP API has no {method} {}; its routes are listed at /v1/openapi.json",
        uri.path()
    )))
}

pub(crate) fn error_response(e: Error) -> Response {
    let (status, _) = status_of(&e);
    let mut response = (status, Json(serde_json::json!({"error": error_json(&e)}))).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
    }
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            // Bearer only: a Basic challenge would make a browser ask for a password
            // and then send it with every request, cross-site ones included.
            axum::http::HeaderValue::from_static("Bearer realm=\"tarn\""),
        );
    }
    response
}
