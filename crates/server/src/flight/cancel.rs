//! Cancelling running queries (`CancelFlightInfo`, and Flight SQL's older `CancelQuery`).
//!
//! Each `DoGet` stream registers under a digest of its ticket. Cancelling a FlightInfo
//! cancels the streams of its tickets: each ends with a `CANCELLED` status at its next
//! batch boundary and drops its DataFusion stream, which stops the query's tasks and frees
//! their memory. A ticket cancelled before its `DoGet` arrives is remembered (a bounded
//! number of them), so a late `DoGet` is refused rather than run.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// Cancelled tickets remembered for a `DoGet` that has not arrived yet.
const REMEMBERED: usize = 4096;

type Key = [u8; 32];

/// The running `DoGet` streams of this server.
#[derive(Debug, Default)]
pub struct Running {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    streams: HashMap<Key, Vec<(u64, CancellationToken)>>,
    cancelled: HashSet<Key>,
    cancelled_order: VecDeque<Key>,
}

/// Removes a stream from the registry when it ends or is dropped.
pub struct Registration {
    running: Arc<Running>,
    key: Key,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.running.inner.lock()
            && let Some(list) = inner.streams.get_mut(&self.key)
        {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                inner.streams.remove(&self.key);
            }
        }
    }
}

/// The registry key of a ticket.
pub fn key(ticket: &[u8]) -> Key {
    Sha256::digest(ticket).into()
}

impl Running {
    /// Registers a stream for `ticket`.
    ///
    /// # Errors
    /// `CANCELLED` when the ticket's FlightInfo was cancelled already.
    pub fn start(
        self: &Arc<Self>,
        ticket: &[u8],
    ) -> Result<(CancellationToken, Registration), Status> {
        let key = key(ticket);
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| Status::internal("cancellation registry poisoned"))?;
        if inner.cancelled.contains(&key) {
            return Err(Status::cancelled("this query was cancelled"));
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let token = CancellationToken::new();
        inner
            .streams
            .entry(key)
            .or_default()
            .push((id, token.clone()));
        Ok((
            token,
            Registration {
                running: Arc::clone(self),
                key,
                id,
            },
        ))
    }

    /// Cancels the streams of `ticket` (and refuses its later `DoGet`s); returns how many
    /// were running.
    pub fn cancel(&self, ticket: &[u8]) -> usize {
        let key = key(ticket);
        let Ok(mut inner) = self.inner.lock() else {
            return 0;
        };
        if inner.cancelled.insert(key) {
            inner.cancelled_order.push_back(key);
            if inner.cancelled_order.len() > REMEMBERED
                && let Some(old) = inner.cancelled_order.pop_front()
            {
                inner.cancelled.remove(&old);
            }
        }
        let streams = inner.streams.remove(&key).unwrap_or_default();
        for (_, token) in &streams {
            token.cancel();
        }
        streams.len()
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// `stream`, ended with `CANCELLED` when `token` fires; the registration lives as long as
/// the stream.
pub fn cancellable<T: Send + 'static>(
    stream: BoxStream<T>,
    token: CancellationToken,
    registration: Registration,
) -> BoxStream<T> {
    let state = (Some(stream), token, registration);
    Box::pin(futures::stream::unfold(
        state,
        |(stream, token, registration)| async move {
            let mut stream = stream?;
            tokio::select! {
                biased;
                () = token.cancelled() => {
                    // Dropping the stream stops the query and frees what it held.
                    drop(stream);
                    Some((
                        Err(Status::cancelled("the query was cancelled (CancelFlightInfo)")),
                        (None, token, registration),
                    ))
                }
                item = stream.next() => {
                    let item = item?;
                    Some((item, (Some(stream), token, registration)))
                }
            }
        },
    ))
}
