//! Streaming ingest over HTTP: `POST /v1/streams/{db}/{table}/records`, like Kinesis'
//! `PutRecords`. The body is NDJSON (one JSON object per line, the default) or an Arrow
//! IPC stream (`Content-Type: application/vnd.apache.arrow.stream`). For NDJSON the answer
//! lists one result per record in order, `{"lsn": N}` for a record taken (durable and
//! visible to queries) or `{"error": {"code", "message"}}` for one refused, with `failed`
//! counting the refused ones, as a partial failure is normal in a stream. An Arrow stream's
//! batches are taken whole: the answer lists `{"lsn", "rows"}` per batch. An error of the
//! whole request (unknown table, full buffers: 429 with `Retry-After`) takes nothing (of an
//! Arrow stream: nothing from the failing batch on).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::query::{Api, error_json, error_response};
use tarn_lake::error::{Error, Result};

/// The content type of an Arrow IPC stream body.
const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// `POST /v1/streams/{db}/{table}/records`.
#[utoipa::path(post, path = "/v1/streams/{db}/{table}/records", tag = "streams",
    params(("db" = String, Path, description = "A database"),
           ("table" = String, Path, description = "A Parquet table of it")),
    request_body(content = String, description = "NDJSON records (or an Arrow IPC stream \
        with Content-Type application/vnd.apache.arrow.stream)"),
    responses((status = 200, description = "`{\"records\": [{\"lsn\"} or {\"error\": \
        {\"code\", \"message\"}}], \"failed\"}`: one result per record, in order", body = Object),
    super::openapi::Errors), security((), ("bearer" = []), ("basic" = [])))]
pub(crate) async fn records(
    State(api): State<Api>,
    Path((database, table)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    match put_records(&api, &headers, &database, &table, &body).await {
        Ok(value) => Json(value).into_response(),
        Err(e) => error_response(e),
    }
}

async fn put_records(
    api: &Api,
    headers: &HeaderMap,
    database: &str,
    table: &str,
    body: &[u8],
) -> Result<Value> {
    api.authenticate(headers)?
        .require_admin("streaming ingest")?;
    let arrow = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(ARROW_STREAM));
    let schema = api.engine.stream_schema(Some(database), table).await?;
    if arrow {
        let reader = arrow::ipc::reader::StreamReader::try_new(body, None)
            .map_err(|e| Error::InvalidArgument(format!("reading the Arrow stream: {e}")))?;
        let mut acks = Vec::new();
        for batch in reader {
            let batch = batch
                .map_err(|e| Error::InvalidArgument(format!("reading the Arrow stream: {e}")))?;
            acks.push(
                api.engine
                    .stream_append(Some(database), table, batch)
                    .await?,
            );
        }
        return Ok(json!({"batches": acks, "failed": 0}));
    }
    let lines: Vec<&[u8]> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .collect();
    // Every record at once; when some do not decode, each alone to say which.
    let (batch, mut results) = match decode(&schema, &lines) {
        Ok(batch) => (batch, vec![None; lines.len()]),
        Err(_) => {
            let mut good = Vec::new();
            let mut results = Vec::with_capacity(lines.len());
            for line in &lines {
                match decode(&schema, std::slice::from_ref(line)) {
                    Ok(b) => {
                        good.push(b);
                        results.push(None);
                    }
                    Err(e) => results.push(Some(json!({"error": error_json(&e)}))),
                }
            }
            let batch = arrow::compute::concat_batches(&schema, &good)
                .map_err(|e| Error::Internal(format!("joining records: {e}")))?;
            (batch, results)
        }
    };
    let failed = results.iter().filter(|r| r.is_some()).count();
    if batch.num_rows() > 0 {
        let ack = api
            .engine
            .stream_append(Some(database), table, batch)
            .await?;
        for r in results.iter_mut().filter(|r| r.is_none()) {
            *r = Some(json!({"lsn": ack.lsn}));
        }
    }
    Ok(json!({"records": results, "failed": failed}))
}

/// NDJSON `lines` as one batch of the table's schema; a field the table does not have, a
/// value of the wrong type or a missing required field is an error naming it.
fn decode(schema: &SchemaRef, lines: &[&[u8]]) -> Result<RecordBatch> {
    let bad = |e: arrow::error::ArrowError| Error::InvalidArgument(format!("record: {e}"));
    let mut decoder = arrow::json::ReaderBuilder::new(Arc::clone(schema))
        .with_strict_mode(true)
        .with_batch_size(lines.len().max(1))
        .build_decoder()
        .map_err(bad)?;
    for line in lines {
        let mut rest: &[u8] = line;
        while !rest.is_empty() {
            let read = decoder.decode(rest).map_err(bad)?;
            if read == 0 {
                break;
            }
            rest = &rest[read..];
        }
    }
    let batch = decoder
        .flush()
        .map_err(bad)?
        .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(schema)));
    if batch.num_rows() != lines.len() {
        return Err(Error::InvalidArgument(format!(
            "{} lines held {} records; send one JSON object per line",
            lines.len(),
            batch.num_rows()
        )));
    }
    Ok(batch)
}
