//! Streaming ingest over Flight: `DoPut` with a *path* descriptor naming the table
//! (`["db", "table"]`, `["db.table"]`, or `["table"]` in the session's database) and Arrow
//! batches. Each batch is acknowledged with one `PutResult` whose `app_metadata` is JSON,
//! `{"lsn": N, "rows": R}`, sent once the batch is durable in the log and visible to
//! queries. A batch that cannot be taken ends the call with its error; the batches
//! acknowledged before it stay. Up to [`IN_FLIGHT`] batches of one call are in the log's
//! queue at once, so one writer fills a group commit.

use std::pin::Pin;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::{FlightDescriptor, PutResult};
use futures::{Stream, StreamExt, TryStreamExt};
use tonic::{Request, Response, Status};

use tarn_lake::engine::Engine;
use tarn_lake::error::Error;

use crate::auth::caller;

/// Batches of one call appended concurrently (their acknowledgements keep their order).
const IN_FLIGHT: usize = 16;

type PutStream = Pin<Box<dyn Stream<Item = Result<PutResult, Status>> + Send + 'static>>;

/// The table a path descriptor names: (database, table).
pub(super) fn stream_target(descriptor: &FlightDescriptor) -> Option<(Option<String>, String)> {
    let path: Vec<&str> = descriptor.path.iter().map(String::as_str).collect();
    match path.as_slice() {
        [db, table] => Some((Some((*db).to_string()), (*table).to_string())),
        [one] => match one.split_once('.') {
            Some((db, table)) => Some((Some(db.to_string()), table.to_string())),
            None => Some((None, (*one).to_string())),
        },
        _ => None,
    }
}

/// Serves a stream `DoPut` (see the module docs).
pub(super) async fn do_put_stream(
    engine: &Engine,
    mut request: Request<PeekableFlightDataStream>,
) -> Result<Response<PutStream>, Status> {
    caller(&request)
        .require_admin("streaming ingest")
        .map_err(crate::status::status)?;
    let descriptor = Pin::new(request.get_mut())
        .peek()
        .await
        .and_then(|first| first.as_ref().ok())
        .and_then(|first| first.flight_descriptor.clone())
        .unwrap_or_default();
    let Some((database, table)) = stream_target(&descriptor) else {
        return Err(Status::invalid_argument(
            "a streaming DoPut names its table with a path descriptor: [\"db\", \"table\"] \
             or [\"db.table\"]; Flight SQL commands go in a command descriptor",
        ));
    };
    let database = database.or_else(|| super::requested_database(&request));
    let stream = request.into_inner().map_err(FlightError::from);
    let batches = FlightRecordBatchStream::new_from_flight_data(stream);
    let engine = engine.clone();
    let acks = batches
        .map(move |batch| {
            let engine = engine.clone();
            let database = database.clone();
            let table = table.clone();
            async move {
                let batch = batch.map_err(|e| {
                    crate::status::status(Error::InvalidArgument(format!(
                        "reading the streamed batches: {e}"
                    )))
                })?;
                let ack = engine
                    .stream_append(database.as_deref(), &table, batch)
                    .await
                    .map_err(|e| {
                        let mut status = crate::status::status(e);
                        if status.code() == tonic::Code::ResourceExhausted {
                            // Retryable: the buffers drain as deliveries commit.
                            status.metadata_mut().insert(
                                "retry-after",
                                tonic::metadata::MetadataValue::from_static("1"),
                            );
                        }
                        status
                    })?;
                let metadata = serde_json::to_vec(&ack)
                    .map_err(|e| Status::internal(format!("encoding an acknowledgement: {e}")))?;
                Ok(PutResult {
                    app_metadata: metadata.into(),
                })
            }
        })
        .buffered(IN_FLIGHT);
    // The first error ends the call (the batches after it are not taken).
    let acks = acks.scan(false, |failed, item: Result<PutResult, Status>| {
        let out = match (*failed, item) {
            (true, _) => None,
            (false, Err(e)) => {
                *failed = true;
                Some(Err(e))
            }
            (false, ok) => Some(ok),
        };
        futures::future::ready(out)
    });
    Ok(Response::new(Box::pin(acks)))
}
