//! The speed layer: streamed records, durable when acknowledged, queryable at once, and
//! delivered to the lake as partitioned Parquet the way Firehose delivers.
//!
//! A writer's batch is appended to the [write-ahead log](wal) together with every other
//! batch that arrived meanwhile (group commit: one fsync for the group); once the fsync
//! returns, the batch joins its table's in-memory buffer and the writer is acknowledged.
//! A scan of the table is the union of its catalogued files and its buffer, so the next
//! query sees the record.
//!
//! A table's buffer is delivered when it holds `flush_bytes` or its oldest record is
//! `flush_age` old: its records are written into the table's partition layout and
//! committed in one catalog commit, which also records the newest log sequence number
//! (LSN) delivered. A restarted server replays the log's records above that number, so a
//! crash at any moment loses no acknowledged record and catalogues none twice.
//!
//! Delivered records stay in memory while a query planned before the delivery may still
//! scan the table: each table provider notes the delivery *epoch* it read its files at
//! (under [`Streams::gate`], which a delivery holds while it commits), and includes the
//! buffered records delivered after that epoch. A delivered record is forgotten once no
//! provider of an earlier epoch is alive.

pub mod wal;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use arrow::array::{Array, RecordBatch, new_null_array};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::SchemaRef;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use wal::{Frame, Wal};

/// Where the log lives and when buffers are delivered.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// The log's folder (under the data directory).
    pub dir: PathBuf,
    /// A table's buffer is delivered once it holds this many bytes (Firehose: 5 MB).
    pub flush_bytes: usize,
    /// ... or once its oldest record is this old (Firehose: 300 s).
    pub flush_age: Duration,
    /// Bytes of buffered records held at most, all tables together; beyond it writers are
    /// told to retry (`RESOURCE_EXHAUSTED`, HTTP 429).
    pub max_bytes: usize,
}

/// A table records are streamed into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableKey {
    pub id: i64,
    pub database: String,
    pub name: String,
}

/// What a writer's batch was acknowledged with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Ack {
    /// The batch's log sequence number.
    pub lsn: u64,
    pub rows: usize,
}

/// A table's records due for delivery, taken out of its buffer's pending set.
#[derive(Debug)]
pub struct Due {
    pub table: TableKey,
    pub batches: Vec<RecordBatch>,
    /// The newest LSN among them.
    pub newest_lsn: u64,
}

/// Buffered rows as one provider sees them, at its epoch.
#[derive(Debug, Clone)]
pub struct StreamView {
    streams: Arc<Streams>,
    table_id: i64,
    epoch: u64,
    _reader: Arc<()>,
}

impl StreamView {
    /// The buffered batches this provider's scans include (those not delivered into the
    /// files it read).
    pub fn batches(&self) -> Vec<RecordBatch> {
        self.streams.visible(self.table_id, self.epoch)
    }

    /// Whether any buffered batch is visible to this provider.
    pub fn has_rows(&self) -> bool {
        let state = self.streams.lock();
        state.tables.get(&self.table_id).is_some_and(|t| {
            t.entries
                .iter()
                .any(|e| e.delivered_at.is_none_or(|d| d > self.epoch))
        })
    }
}

struct Append {
    table: TableKey,
    batch: RecordBatch,
    done: oneshot::Sender<Result<u64>>,
}

#[derive(Debug)]
struct Entry {
    lsn: u64,
    batch: RecordBatch,
    bytes: usize,
    arrived: Instant,
    /// Taken by a delivery that has not committed yet.
    in_flight: bool,
    /// The epoch its delivery committed at.
    delivered_at: Option<u64>,
}

#[derive(Debug)]
struct TableBuffer {
    table: TableKey,
    entries: VecDeque<Entry>,
    /// Newest LSN delivered to the table's files.
    delivered: u64,
    /// Live providers of this table, with the epoch each read its files at.
    readers: Vec<(u64, Weak<()>)>,
}

impl TableBuffer {
    fn pending(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.delivered_at.is_none())
    }
}

#[derive(Debug, Default)]
struct State {
    tables: HashMap<i64, TableBuffer>,
    /// Bytes of every buffered batch (delivered ones still held included).
    bytes: usize,
}

#[derive(Debug)]
struct Started {
    options: StreamOptions,
    log_id: String,
    queue: mpsc::UnboundedSender<Append>,
    wal: Arc<Mutex<Wal>>,
}

impl std::fmt::Debug for Append {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Append")
            .field("table", &self.table)
            .finish()
    }
}

/// Every table's buffer, the log, and the delivery epoch. One per engine.
#[derive(Debug, Default)]
pub struct Streams {
    state: Mutex<State>,
    started: OnceLock<Started>,
    epoch: AtomicU64,
    gate: tokio::sync::RwLock<()>,
    /// Woken when a buffer reaches its delivery size.
    pub(crate) due: tokio::sync::Notify,
}

impl Streams {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Held for reading while a provider reads its files and notes its epoch; for writing
    /// while a delivery commits and marks its records delivered.
    pub fn gate(&self) -> &tokio::sync::RwLock<()> {
        &self.gate
    }

    /// The options the streams were started with.
    pub fn options(&self) -> Option<&StreamOptions> {
        self.started.get().map(|s| &s.options)
    }

    /// The view of a provider that is reading `table_id`'s files now (call with
    /// [`Streams::gate`] held for reading). `None` before the streams start.
    pub fn reader(self: &Arc<Self>, table: &TableKey) -> Option<StreamView> {
        self.started.get()?;
        let epoch = self.epoch.load(Ordering::SeqCst);
        let token = Arc::new(());
        let mut state = self.lock();
        let t = buffer_of(&mut state, table);
        t.readers.retain(|(_, r)| r.strong_count() > 0);
        t.readers.push((epoch, Arc::downgrade(&token)));
        Some(StreamView {
            streams: Arc::clone(self),
            table_id: table.id,
            epoch,
            _reader: token,
        })
    }

    fn visible(&self, table_id: i64, epoch: u64) -> Vec<RecordBatch> {
        let state = self.lock();
        state
            .tables
            .get(&table_id)
            .map(|t| {
                t.entries
                    .iter()
                    .filter(|e| e.delivered_at.is_none_or(|d| d > epoch))
                    .map(|e| e.batch.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Opens the streams over the log `wal`, replaying its `frames` not yet delivered
    /// (`delivered`: by table id, the newest LSN its files hold) into the buffers of the
    /// tables in `tables` (by id; records of other tables belong to dropped tables).
    /// Returns the number of records replayed.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the streams were started already.
    pub fn start(
        self: &Arc<Self>,
        options: StreamOptions,
        wal: Wal,
        frames: Vec<Frame>,
        tables: &HashMap<i64, TableKey>,
        delivered: &HashMap<i64, u64>,
    ) -> Result<usize> {
        let (queue, receiver) = mpsc::unbounded_channel();
        let log_id = wal.id().to_string();
        let wal = Arc::new(Mutex::new(wal));
        let started = Started {
            options,
            log_id,
            queue,
            wal: Arc::clone(&wal),
        };
        self.started
            .set(started)
            .map_err(|_| Error::InvalidArgument("the streams were started already".into()))?;
        let mut replayed = 0;
        {
            let mut state = self.lock();
            for (id, table) in tables {
                if let Some(lsn) = delivered.get(id) {
                    buffer_of(&mut state, table).delivered = *lsn;
                }
            }
            for frame in frames {
                let Some(table) = tables.get(&frame.table_id) else {
                    continue;
                };
                if delivered
                    .get(&frame.table_id)
                    .is_some_and(|d| frame.lsn <= *d)
                {
                    continue;
                }
                add(&mut state, table, frame.lsn, frame.batch);
                replayed += 1;
            }
        }
        tokio::spawn(Arc::clone(self).commit_loop(wal, receiver));
        Ok(replayed)
    }

    /// The id of the log the streams write (recorded with each delivery).
    pub fn log_id(&self) -> Option<&str> {
        self.started.get().map(|s| s.log_id.as_str())
    }

    /// Appends `batch` (already in `table`'s schema) to the log and the table's buffer;
    /// returns once it is durable and visible.
    ///
    /// # Errors
    /// [`Error::ResourceExhausted`] when the buffers are full (retry later);
    /// [`Error::Unavailable`] when the streams are not started or the log cannot be
    /// written (nothing was acknowledged then).
    pub async fn append(&self, table: TableKey, batch: RecordBatch) -> Result<Ack> {
        let started = self.started.get().ok_or_else(|| {
            Error::Unavailable("streaming ingest runs in `tarn serve` only".to_string())
        })?;
        let rows = batch.num_rows();
        let bytes = batch.get_array_memory_size();
        {
            let state = self.lock();
            if state.bytes > 0 && state.bytes + bytes > started.options.max_bytes {
                return Err(Error::ResourceExhausted(format!(
                    "stream buffers are full ({} of {} MiB held until delivered to the lake); \
                     retry in a second",
                    state.bytes >> 20,
                    started.options.max_bytes >> 20
                )));
            }
        }
        let (done, acknowledged) = oneshot::channel();
        started
            .queue
            .send(Append { table, batch, done })
            .map_err(|_| Error::Unavailable("the stream log has stopped".to_string()))?;
        let lsn = acknowledged
            .await
            .map_err(|_| Error::Unavailable("the stream log has stopped".to_string()))??;
        Ok(Ack { lsn, rows })
    }

    /// Writes groups of appends to the log, one fsync per group, then buffers and
    /// acknowledges them.
    async fn commit_loop(
        self: Arc<Self>,
        wal: Arc<Mutex<Wal>>,
        mut receiver: mpsc::UnboundedReceiver<Append>,
    ) {
        const GROUP_BYTES: usize = 64 << 20;
        while let Some(first) = receiver.recv().await {
            let mut bytes = first.batch.get_array_memory_size();
            let mut group = vec![first];
            while bytes < GROUP_BYTES {
                match receiver.try_recv() {
                    Ok(next) => {
                        bytes += next.batch.get_array_memory_size();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            let frames: Vec<(i64, RecordBatch)> = group
                .iter()
                .map(|a| (a.table.id, a.batch.clone()))
                .collect();
            let log = Arc::clone(&wal);
            let written = tokio::task::spawn_blocking(move || {
                log.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .append(&frames)
            })
            .await
            .map_err(|e| Error::Internal(format!("the log writer failed: {e}")))
            .and_then(|r| r);
            match written {
                Ok(lsns) => {
                    {
                        let mut state = self.lock();
                        for (append, lsn) in group.iter().zip(&lsns) {
                            add(&mut state, &append.table, *lsn, append.batch.clone());
                        }
                    }
                    if self.any_due() {
                        self.due.notify_one();
                    }
                    for (append, lsn) in group.into_iter().zip(lsns) {
                        let _ = append.done.send(Ok(lsn));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "the stream log could not be written");
                    for append in group {
                        let _ = append.done.send(Err(Error::Unavailable(format!(
                            "the stream log could not be written ({e}); nothing was \
                             acknowledged, retry"
                        ))));
                    }
                }
            }
        }
    }

    fn any_due(&self) -> bool {
        let Some(options) = self.options() else {
            return false;
        };
        let state = self.lock();
        state
            .tables
            .values()
            .any(|t| t.pending().map(|e| e.bytes).sum::<usize>() >= options.flush_bytes)
    }

    /// The tables whose pending records are due for delivery (all that have any when
    /// `all`), their records marked in flight.
    pub fn take_due(&self, all: bool) -> Vec<Due> {
        let Some(options) = self.options() else {
            return Vec::new();
        };
        let now = Instant::now();
        let mut state = self.lock();
        let mut due = Vec::new();
        for t in state.tables.values_mut() {
            if t.entries.iter().any(|e| e.in_flight) {
                continue;
            }
            let pending: Vec<&Entry> = t.pending().collect();
            let Some(oldest) = pending.first() else {
                continue;
            };
            let bytes: usize = pending.iter().map(|e| e.bytes).sum();
            if !(all
                || bytes >= options.flush_bytes
                || now.duration_since(oldest.arrived) >= options.flush_age)
            {
                continue;
            }
            let batches = pending.iter().map(|e| e.batch.clone()).collect();
            let newest_lsn = pending.last().map_or(0, |e| e.lsn);
            for e in t.entries.iter_mut().filter(|e| e.delivered_at.is_none()) {
                e.in_flight = true;
            }
            due.push(Due {
                table: t.table.clone(),
                batches,
                newest_lsn,
            });
        }
        due
    }

    /// Marks `due`'s records delivered (call with [`Streams::gate`] held for writing,
    /// right after its commit).
    pub fn delivered(&self, due: &Due) {
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        let mut state = self.lock();
        if let Some(t) = state.tables.get_mut(&due.table.id) {
            for e in t.entries.iter_mut().filter(|e| e.in_flight) {
                e.in_flight = false;
                e.delivered_at = Some(epoch);
            }
            t.delivered = t.delivered.max(due.newest_lsn);
        }
    }

    /// Puts `due`'s records back in the pending set (its delivery failed; a later one
    /// retries).
    pub fn not_delivered(&self, due: &Due) {
        let mut state = self.lock();
        if let Some(t) = state.tables.get_mut(&due.table.id) {
            for e in t.entries.iter_mut() {
                e.in_flight = false;
            }
        }
    }

    /// Drops the buffer of a table that no longer exists (dropped, or replaced by a new
    /// table of the same name).
    pub fn discard(&self, table_id: i64) {
        let mut state = self.lock();
        if let Some(t) = state.tables.remove(&table_id) {
            let bytes: usize = t.entries.iter().map(|e| e.bytes).sum();
            state.bytes -= bytes.min(state.bytes);
            tracing::warn!(
                table = %format!("{}.{}", t.table.database, t.table.name),
                records = t.entries.len(),
                "buffered stream records dropped: the table no longer exists"
            );
        }
    }

    /// Forgets delivered records no live provider needs any more, and deletes the log
    /// segments whose records were all delivered.
    pub fn forget_delivered(&self) {
        {
            let mut state = self.lock();
            let mut freed = 0;
            for t in state.tables.values_mut() {
                t.readers.retain(|(_, r)| r.strong_count() > 0);
                let oldest_reader = t.readers.iter().map(|(e, _)| *e).min();
                t.entries.retain(|e| match (e.delivered_at, oldest_reader) {
                    (None, _) => true,
                    (Some(_), None) => {
                        freed += e.bytes;
                        false
                    }
                    (Some(d), Some(r)) if d <= r => {
                        freed += e.bytes;
                        false
                    }
                    _ => true,
                });
            }
            state.bytes -= freed.min(state.bytes);
        }
        let Some(started) = self.started.get() else {
            return;
        };
        let delivered: HashMap<i64, u64> = {
            let state = self.lock();
            state
                .tables
                .iter()
                .map(|(id, t)| {
                    // Records of a table still pending hold back its segments.
                    let pending = t.pending().map(|e| e.lsn).min();
                    (*id, pending.map_or(t.delivered, |p| p.saturating_sub(1)))
                })
                .collect()
        };
        let mut wal = started.wal.lock().unwrap_or_else(|p| p.into_inner());
        wal.release(|table| delivered.get(&table).copied());
    }

    /// A number that grows whenever `table_id`'s buffered records change (for result
    /// cache keys).
    pub fn newest(&self, table_id: i64) -> u64 {
        let state = self.lock();
        state.tables.get(&table_id).map_or(0, |t| {
            t.entries
                .back()
                .map_or(t.delivered, |e| e.lsn.max(t.delivered))
        })
    }
}

fn buffer_of<'a>(state: &'a mut State, table: &TableKey) -> &'a mut TableBuffer {
    state.tables.entry(table.id).or_insert_with(|| TableBuffer {
        table: table.clone(),
        entries: VecDeque::new(),
        delivered: 0,
        readers: Vec::new(),
    })
}

fn add(state: &mut State, table: &TableKey, lsn: u64, batch: RecordBatch) {
    let bytes = batch.get_array_memory_size();
    let buffer = buffer_of(state, table);
    buffer.entries.push_back(Entry {
        lsn,
        batch,
        bytes,
        arrived: Instant::now(),
        in_flight: false,
        delivered_at: None,
    });
    state.bytes += bytes;
}

/// `batch` in the table schema `schema`: columns matched by name and cast, missing ones
/// NULL. With `strict`, a column the table does not have, a value that does not convert,
/// or a NULL in a column that takes none is an error naming the column; otherwise (a
/// buffered batch read after the table was widened) extra columns are left out.
///
/// # Errors
/// [`Error::InvalidArgument`] as above.
pub fn conform(
    batch: &RecordBatch,
    schema: &SchemaRef,
    table: &str,
    strict: bool,
) -> Result<RecordBatch> {
    let incoming = batch.schema();
    if strict {
        for f in incoming.fields() {
            if schema.field_with_name(f.name()).is_err() {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(Error::InvalidArgument(format!(
                    "column '{}' is not in table {table} (its columns: {}); leave it out, or \
                     add it to the table first with an append-mode ingest that has it",
                    f.name(),
                    names.join(", ")
                )));
            }
        }
    }
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let column = match incoming.index_of(field.name()) {
            Ok(i) => {
                let column = batch.column(i);
                if column.data_type() == field.data_type() {
                    Arc::clone(column)
                } else {
                    cast_with_options(column, field.data_type(), &options).map_err(|e| {
                        Error::InvalidArgument(format!(
                            "column '{}' of {table}: {} values do not convert to the table's \
                             {}: {e}",
                            field.name(),
                            column.data_type(),
                            field.data_type()
                        ))
                    })?
                }
            }
            Err(_) => new_null_array(field.data_type(), batch.num_rows()),
        };
        if strict && !field.is_nullable() && column.null_count() > 0 {
            return Err(Error::InvalidArgument(format!(
                "column '{}' of {table} takes no NULL; give it a value in every record",
                field.name()
            )));
        }
        columns.push(column);
    }
    RecordBatch::try_new(Arc::clone(schema), columns)
        .map_err(|e| Error::InvalidArgument(format!("records for {table}: {e}")))
}
