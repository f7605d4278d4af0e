//! What one query may take from a shared server: a place among the running queries
//! (admission, with a bounded queue), time, and memory (one pool for the server, with
//! spilling to disk).
//!
//! A query that reads tables waits for one of `max_concurrent` places, in a FIFO queue of
//! at most `max_queued`; past that it is refused at once ("too many queries"), and one
//! that waited `queue_timeout` is refused then. Queries that read no table (`SELECT 1`,
//! `SHOW …`, metadata) never wait. A query holds its place, and its deadline runs, until
//! its result stream ends or is dropped (a client that disconnects drops it, which stops
//! the query and frees its memory).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool, TrackConsumersPool};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::engine::history::{Ended, History, QueryLabel};
use crate::engine::metrics::{Metrics, Outcome};
use crate::error::{Error, Result};
use crate::probe::QueryProbe;

/// How many queries run at once, how many wait, and for how long each may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryLimits {
    /// Queries that read tables running at once (`None`: no limit).
    pub max_concurrent: Option<usize>,
    /// Queries waiting for a place; past it a query is refused at once.
    pub max_queued: usize,
    /// How long a query may wait for a place.
    pub queue_timeout: Duration,
    /// How long a query may run once admitted (`None`: no limit).
    pub query_timeout: Option<Duration>,
}

impl Default for QueryLimits {
    /// No limits: what one-shot commands run with.
    fn default() -> Self {
        Self {
            max_concurrent: None,
            max_queued: 0,
            queue_timeout: Duration::ZERO,
            query_timeout: None,
        }
    }
}

/// The server's memory: a pool every query's operators reserve from (sorts, aggregations
/// and joins spill to `spill_dir` when their share is used up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimit {
    /// Bytes of the pool.
    pub bytes: usize,
    /// Where operators spill; `None`: the system's temporary directory.
    pub spill_dir: Option<std::path::PathBuf>,
}

/// A pool of `bytes` shared fairly among the operators that can spill, whose errors name
/// the largest consumers.
pub(crate) fn memory_pool(bytes: usize) -> Arc<dyn MemoryPool> {
    let top = std::num::NonZeroUsize::new(5).unwrap_or(std::num::NonZeroUsize::MIN);
    Arc::new(TrackConsumersPool::new(FairSpillPool::new(bytes), top))
}

/// Places for running queries, shared by every session of an engine.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: QueryLimits,
    places: Option<Arc<Semaphore>>,
    waiting: AtomicUsize,
    memory_limit: Option<usize>,
    pub(crate) metrics: Arc<Metrics>,
}

/// A running query's place, given back when dropped.
#[derive(Debug)]
pub(crate) struct Place(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl Place {
    /// The place of a query that needs none (it reads no table).
    pub(crate) fn free() -> Self {
        Place(None)
    }
}

/// Whether `plan` reads a table (other than `information_schema`'s): such queries wait
/// for a place; `SELECT 1` and metadata queries never do.
pub(crate) fn reads_tables(plan: &datafusion::logical_expr::LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::LogicalPlan;
    let mut reads = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && scan.table_name.schema() != Some("information_schema")
        {
            reads = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    reads
}

impl Admission {
    /// The server's limits.
    pub(crate) fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    pub(crate) fn new(limits: QueryLimits, memory_limit: Option<usize>) -> Self {
        let places = limits
            .max_concurrent
            .map(|n| Arc::new(Semaphore::new(n.max(1))));
        Self {
            limits,
            places,
            waiting: AtomicUsize::new(0),
            memory_limit,
            metrics: Arc::default(),
        }
    }

    /// Queries waiting for a place now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Waits for a place (FIFO).
    ///
    /// # Errors
    /// [`Error::ResourceExhausted`] when the queue is full or the wait timed out.
    pub(crate) async fn admit(&self) -> Result<Place> {
        let Some(places) = &self.places else {
            return Ok(Place(None));
        };
        if let Ok(permit) = Arc::clone(places).try_acquire_owned() {
            return Ok(Place(Some(permit)));
        }
        let running = self.limits.max_concurrent.unwrap_or(0);
        let queued = self.waiting.fetch_add(1, Ordering::SeqCst);
        let _leave = Leave(&self.waiting);
        if queued >= self.limits.max_queued {
            self.metrics.record(Outcome::Refused, Duration::ZERO, 0);
            return Err(Error::ResourceExhausted(format!(
                "too many queries: {running} are running and {queued} waiting, the server's \
                 limits (--max-concurrent-queries, --max-queued-queries); try again shortly"
            )));
        }
        tracing::info!(running, waiting = queued + 1, "query waits for a place");
        match tokio::time::timeout(
            self.limits.queue_timeout,
            Arc::clone(places).acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => Ok(Place(Some(permit))),
            Ok(Err(_)) => Err(Error::Internal("the admission queue was closed".into())),
            Err(_) => {
                self.metrics
                    .record(Outcome::Refused, self.limits.queue_timeout, 0);
                Err(Error::ResourceExhausted(format!(
                    "too many queries: this one waited {} for one of the {running} places \
                 (--queue-timeout, --max-concurrent-queries); try again shortly",
                    humantime(self.limits.queue_timeout)
                )))
            }
        }
    }

    /// The time limit of a query whose session asked for `session` (which may only lower
    /// the server's), with the setting that set it.
    pub(crate) fn timeout(&self, session: Option<Duration>) -> Option<(Duration, &'static str)> {
        let server = self
            .limits
            .query_timeout
            .map(|t| (t, "the server's --query-timeout"));
        match (server, session) {
            (Some((t, _)), Some(s)) if s < t => Some((s, "the session's query_timeout")),
            (None, Some(s)) => Some((s, "the session's query_timeout")),
            (server, _) => server,
        }
    }

    /// `stream` holding `place` until it ends or is dropped, stopped with an error when
    /// it runs past its time limit, and with memory errors that name the server's limit.
    pub(crate) fn govern(
        &self,
        stream: SendableRecordBatchStream,
        place: Place,
        watch: Watch,
    ) -> SendableRecordBatchStream {
        self.metrics.started();
        let Watch {
            started,
            timeout,
            recorder,
            probe,
            span,
        } = watch;
        let deadline = timeout.map(|(t, source)| (t, source, Box::pin(tokio::time::sleep(t))));
        Box::pin(Governed {
            schema: stream.schema(),
            inner: Some(stream),
            place: Some(place),
            deadline,
            memory_limit: self.memory_limit,
            metrics: Arc::clone(&self.metrics),
            started,
            rows: 0,
            bytes: 0,
            ended: false,
            recorder,
            probe,
            span,
        })
    }
}

/// How a running query is watched: since when, until when (with the setting that set the
/// limit), who records it, what it measures, and the span its work logs in.
pub(crate) struct Watch {
    pub started: std::time::Instant,
    pub timeout: Option<(Duration, &'static str)>,
    pub recorder: Option<Recorder>,
    pub probe: Arc<QueryProbe>,
    pub span: tracing::Span,
}

/// What the query history needs to record a statement as it ends.
pub(crate) struct Recorder {
    pub history: Arc<History>,
    pub label: Arc<QueryLabel>,
    pub id: String,
    pub database: String,
    pub submitted: chrono::DateTime<chrono::Utc>,
    /// From the front door's receipt to the engine's `execute` (parsing, logical planning).
    pub before: Duration,
    pub queued: Duration,
    /// Physical planning (after the wait for a place).
    pub planned: Duration,
    pub probe: Arc<QueryProbe>,
    /// When `execute` started.
    pub started: std::time::Instant,
    /// Whether the statement's end was recorded.
    pub recorded: std::sync::atomic::AtomicBool,
}

impl Drop for Recorder {
    /// A statement dropped before it ended (its client went away while it waited for a
    /// place or was being planned) is recorded as cancelled.
    fn drop(&mut self) {
        if !self.recorded.load(Ordering::SeqCst) {
            self.record(Outcome::Cancelled, self.started.elapsed(), 0, 0, None);
        }
    }
}

impl Recorder {
    pub(crate) fn record(
        &self,
        outcome: Outcome,
        took: Duration,
        rows: u64,
        bytes: u64,
        error: Option<&Error>,
    ) {
        self.record_with(outcome, took, (rows, bytes), error, self.probe.stats());
    }

    /// As [`Recorder::record`], with the query's statistics already read from its probe.
    fn record_with(
        &self,
        outcome: Outcome,
        took: Duration,
        (rows, bytes): (u64, u64),
        error: Option<&Error>,
        mut stats: crate::catalog::QueryStats,
    ) {
        if self.recorded.swap(true, Ordering::SeqCst) {
            return;
        }
        stats.bytes_returned = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.history.record(
            &self.label,
            Ended {
                id: self.id.clone(),
                database: self.database.clone(),
                outcome,
                submitted: self.submitted,
                queued: self.queued,
                planning: self.before + self.planned,
                ran: took.saturating_sub(self.queued + self.planned),
                rows,
                error: error.map(ToString::to_string),
                stats,
            },
        );
    }
}

/// Counts a waiting query out of the queue when it stops waiting.
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Governed {
    schema: SchemaRef,
    inner: Option<SendableRecordBatchStream>,
    place: Option<Place>,
    deadline: Option<(Duration, &'static str, Pin<Box<tokio::time::Sleep>>)>,
    memory_limit: Option<usize>,
    metrics: Arc<Metrics>,
    started: std::time::Instant,
    rows: u64,
    bytes: u64,
    ended: bool,
    recorder: Option<Recorder>,
    /// What the query measured (its scans, for the metrics).
    probe: Arc<QueryProbe>,
    /// The statement's span, entered while it is polled.
    span: tracing::Span,
}

impl Governed {
    /// Stops the query: its operators are dropped (freeing their memory), its place given
    /// back and its outcome counted.
    fn stop(&mut self, outcome: Outcome, error: Option<&Error>) {
        self.inner = None;
        self.place = None;
        if !self.ended {
            self.ended = true;
            let took = self.started.elapsed();
            let _entered = self.span.enter();
            tracing::info!(
                outcome = outcome.label(),
                ms = took.as_millis() as u64,
                rows = self.rows,
                "query ended"
            );
            self.metrics.ended(outcome, took, self.rows);
            // The plan's metrics are read once, for the metrics and the history.
            let stats = self.probe.stats();
            self.metrics
                .scanned(stats.files_scanned, stats.bytes_scanned);
            if let Some(recorder) = &self.recorder {
                recorder.record_with(outcome, took, (self.rows, self.bytes), error, stats);
            }
        }
    }
}

impl Drop for Governed {
    fn drop(&mut self) {
        // Dropped before its end: the client went away or cancelled.
        self.stop(Outcome::Cancelled, None);
    }
}

impl Stream for Governed {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let span = this.span.clone();
        let _entered = span.enter();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some((limit, source, sleep)) = this.deadline.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            let message = format!(
                "the query ran longer than its limit of {} ({source}) and was cancelled; \
                 make it read less (filters on partition columns, fewer columns) or ask for a \
                 higher limit",
                humantime(*limit)
            );
            let error = Error::Timeout(message);
            this.stop(Outcome::TimedOut, Some(&error));
            return Poll::Ready(Some(Err(DataFusionError::External(Box::new(error)))));
        }
        match inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Err(e))) => {
                let e = name_the_limit(e, this.memory_limit);
                let tarn = match &e {
                    DataFusionError::External(inner) => inner
                        .downcast_ref::<Error>()
                        .map(|t| (Outcome::of_error(t), t.to_string())),
                    _ => None,
                };
                let (outcome, message) = tarn.unwrap_or_else(|| (Outcome::Failed, e.to_string()));
                this.stop(outcome, Some(&Error::Execution(message)));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.stop(Outcome::Finished, None);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(batch))) => {
                this.rows += batch.num_rows() as u64;
                this.bytes += batch.get_array_memory_size() as u64;
                Poll::Ready(Some(Ok(batch)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl RecordBatchStream for Governed {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

/// A memory error that says what the server's limit is and what to do.
fn name_the_limit(e: DataFusionError, limit: Option<usize>) -> DataFusionError {
    let exhausted = match e.find_root() {
        DataFusionError::ResourcesExhausted(m) => m.clone(),
        _ => return e,
    };
    let limit = limit.map_or_else(String::new, |b| format!(" of {}", human_bytes(b)));
    DataFusionError::External(Box::new(Error::ResourceExhausted(format!(
        "the query needs more memory than the server's limit{limit} leaves it (--memory-limit) \
         and was stopped; other queries go on. Make it read less, or run it when fewer \
         queries run. {exhausted}"
    ))))
}

pub(crate) fn human_bytes(bytes: usize) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn humantime(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        format!("{ms} ms")
    } else if !ms.is_multiple_of(60_000) || ms == 0 {
        format!("{} s", ms / 1000)
    } else {
        format!("{} min", ms / 60_000)
    }
}

/// A size as bytes (`1073741824`), with a unit (`512MB`, `4GiB`, `2g`), or as a share of
/// `total` (`60%`).
///
/// # Errors
/// [`Error::InvalidArgument`] for anything else.
pub fn parse_size(text: &str, total: u64) -> Result<usize> {
    let t = text.trim();
    let bad = || {
        Error::InvalidArgument(format!(
            "'{text}' is not a size: give bytes (1073741824), a unit (512MB, 4GiB) or a share \
             of the memory (60%)"
        ))
    };
    if let Some(share) = t.strip_suffix('%') {
        let share: f64 = share.trim().parse().map_err(|_| bad())?;
        if !(share > 0.0 && share <= 100.0) {
            return Err(bad());
        }
        return Ok((total as f64 * share / 100.0) as usize);
    }
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.trim().parse().map_err(|_| bad())?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    if number <= 0.0 {
        return Err(bad());
    }
    Ok((number * scale as f64) as usize)
}

/// The memory this process may use: the container's limit (cgroup v2 or v1) when there
/// is one below the machine's, else the machine's.
pub fn available_memory() -> u64 {
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(8 << 30, |kb| kb * 1024);
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .filter_map(|v| v.trim().parse::<u64>().ok())
    .min();
    cgroup.map_or(machine, |c| c.min(machine))
}

/// This process's spill directory under `root` (`root/<pid>`), after removing those of
/// processes that are gone (a spill file outlives only a process that stopped mid-query;
/// servers sharing a data directory keep theirs).
///
/// # Errors
/// [`Error::Io`] when the directory cannot be made.
pub fn own_spill_dir(root: &std::path::Path) -> Result<std::path::PathBuf> {
    let me = std::process::id();
    // Without /proc (not Linux) only this process's own old directory is known to be dead.
    let proc = std::path::Path::new("/proc/self").exists();
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let gone = pid == me
                || (proc && !std::path::Path::new("/proc").join(pid.to_string()).exists());
            if gone && let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %e,
                    "could not remove an old spill directory");
            }
        }
    }
    let dir = root.join(me.to_string());
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(dir)
}

/// A duration as seconds (`30`), or with a unit (`500ms`, `30s`, `5m`, `1h`).
///
/// # Errors
/// [`Error::InvalidArgument`] for anything else.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let t = text.trim();
    let bad = || {
        Error::InvalidArgument(format!(
            "'{text}' is not a duration: give seconds (30) or a unit (500ms, 30s, 5m, 1h, 1d)"
        ))
    };
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.trim().parse().map_err(|_| bad())?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86_400.0,
        _ => return Err(bad()),
    };
    if !(seconds >= 0.0 && seconds.is_finite()) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    // A test fails by panicking; none of this is compiled outside tests.
    use super::*;

    #[test]
    fn sizes_parse_as_bytes_units_and_shares() {
        assert_eq!(parse_size("1024", 0).unwrap(), 1024);
        assert_eq!(parse_size("512MB", 0).unwrap(), 512 << 20);
        assert_eq!(parse_size("4GiB", 0).unwrap(), 4 << 30);
        assert_eq!(parse_size("1.5g", 0).unwrap(), 3 << 29);
        assert_eq!(parse_size("60%", 1000).unwrap(), 600);
        for bad in ["", "abc", "0", "-1GB", "12XB", "150%", "0%"] {
            assert!(parse_size(bad, 1000).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_parse_as_seconds_and_units() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        for bad in ["", "x", "-3s", "5 weeks"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_machine_reports_some_memory() {
        assert!(available_memory() > 0);
    }
}
