//! The engine's Prometheus metrics: queries by outcome, their latency, rows returned, bytes
//! and files scanned, the admission queue, the memory pool and spill, the result cache,
//! crawls and materialized view refreshes (counts and durations) and catalog commit
//! latency. Counters are updated as things end; gauges of state (queue, pool, cache) are
//! read when the metrics are rendered.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::Error;

/// How a query ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Outcome {
    /// Its results were read to the end.
    Finished,
    /// It failed (bad data, a bug, a store error).
    Failed,
    /// Its client went away or cancelled it before the end.
    Cancelled,
    /// It ran past the query timeout.
    TimedOut,
    /// It needed more memory than the pool could give.
    OutOfMemory,
    /// It was refused a place (queue full or queue timeout).
    Refused,
}

impl Outcome {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Finished => "finished",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::TimedOut => "timeout",
            Outcome::OutOfMemory => "resource_exhausted",
            Outcome::Refused => "refused",
        }
    }

    /// The outcome of a query that failed with `e`.
    pub(crate) fn of_error(e: &Error) -> Self {
        match e {
            Error::Timeout(_) => Outcome::TimedOut,
            Error::ResourceExhausted(_) => Outcome::OutOfMemory,
            _ => Outcome::Failed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The metrics of one engine (shared by its sessions).
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    queries: Family<OutcomeLabel, Counter>,
    duration: Histogram,
    rows: Counter,
    running: Gauge,
    queued: Gauge,
    pool_reserved: Gauge,
    spill_files: Gauge,
    spill_bytes: Gauge,
    cache_hits: Counter<u64, AtomicU64>,
    cache_misses: Counter<u64, AtomicU64>,
    cache_bytes: Gauge,
    bytes_scanned: Counter,
    files_scanned: Counter,
    crawls: Family<StatusLabel, Counter>,
    crawl_duration: Histogram,
    refreshes: Family<StatusLabel, Counter>,
    refresh_duration: Histogram,
    commit_duration: Histogram,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tarn");
        let queries = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "queries",
            "Queries that ended, by outcome (finished, failed, cancelled, timeout, \
             resource_exhausted, refused)",
            queries.clone(),
        );
        // 1 ms to ~65 s.
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register(
            "query_duration_seconds",
            "Time from admission to the end of a query's results",
            duration.clone(),
        );
        let rows = Counter::default();
        registry.register("rows_returned", "Rows returned to clients", rows.clone());
        let running = Gauge::default();
        registry.register("queries_running", "Queries running now", running.clone());
        let queued = Gauge::default();
        registry.register(
            "queries_queued",
            "Queries waiting for a place",
            queued.clone(),
        );
        let pool_reserved = Gauge::default();
        registry.register(
            "memory_pool_reserved_bytes",
            "Bytes reserved in the query memory pool",
            pool_reserved.clone(),
        );
        let spill_files = Gauge::default();
        registry.register(
            "spill_files",
            "Spill files on disk now",
            spill_files.clone(),
        );
        let spill_bytes = Gauge::default();
        registry.register(
            "spill_bytes",
            "Bytes of spill files on disk now",
            spill_bytes.clone(),
        );
        let cache_hits = Counter::default();
        registry.register(
            "result_cache_hits",
            "Queries answered from the result cache",
            cache_hits.clone(),
        );
        let cache_misses = Counter::default();
        registry.register(
            "result_cache_misses",
            "Cacheable queries that ran",
            cache_misses.clone(),
        );
        let cache_bytes = Gauge::default();
        registry.register(
            "result_cache_bytes",
            "Bytes of results held by the result cache",
            cache_bytes.clone(),
        );
        let bytes_scanned = Counter::default();
        registry.register(
            "bytes_scanned",
            "Bytes queries read from the lake (Parquet: the ranges read; text: whole files)",
            bytes_scanned.clone(),
        );
        let files_scanned = Counter::default();
        registry.register(
            "files_scanned",
            "Files queries' scans were planned over",
            files_scanned.clone(),
        );
        let crawls = Family::<StatusLabel, Counter>::default();
        registry.register("crawls", "Crawls that ended, by status", crawls.clone());
        // 10 ms to ~2.8 h.
        let crawl_duration = Histogram::new(exponential_buckets(0.01, 2.0, 21));
        registry.register(
            "crawl_duration_seconds",
            "Time crawls took, from start to the last commit",
            crawl_duration.clone(),
        );
        let refreshes = Family::<StatusLabel, Counter>::default();
        registry.register(
            "rollup_refreshes",
            "Materialized view refreshes that ended, by status (succeeded, failed)",
            refreshes.clone(),
        );
        let refresh_duration = Histogram::new(exponential_buckets(0.01, 2.0, 21));
        registry.register(
            "rollup_refresh_duration_seconds",
            "Time materialized view refreshes took",
            refresh_duration.clone(),
        );
        // 0.1 ms to ~6.5 s.
        let commit_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 17));
        registry.register(
            "catalog_commit_duration_seconds",
            "Time a table's changes took to commit to the catalog (one transaction)",
            commit_duration.clone(),
        );
        Self {
            bytes_scanned,
            files_scanned,
            crawls,
            crawl_duration,
            refreshes,
            refresh_duration,
            commit_duration,
            registry,
            queries,
            duration,
            rows,
            running,
            queued,
            pool_reserved,
            spill_files,
            spill_bytes,
            cache_hits,
            cache_misses,
            cache_bytes,
        }
    }
}

/// What the engine knows of its state when the metrics are rendered.
pub(crate) struct State {
    pub queued: usize,
    pub pool_reserved: usize,
    pub spill_files: usize,
    pub spill_bytes: usize,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_bytes: usize,
}

impl Metrics {
    pub(crate) fn started(&self) {
        self.running.inc();
    }

    /// A query that had started (is counted as running) ended.
    pub(crate) fn ended(&self, outcome: Outcome, took: Duration, rows: u64) {
        self.running.dec();
        self.record(outcome, took, rows);
    }

    /// A query ended without running (refused).
    pub(crate) fn record(&self, outcome: Outcome, took: Duration, rows: u64) {
        self.queries
            .get_or_create(&OutcomeLabel {
                outcome: outcome.label(),
            })
            .inc();
        self.duration.observe(took.as_secs_f64());
        self.rows.inc_by(rows);
    }

    /// What a query's scans read.
    pub(crate) fn scanned(&self, files: i64, bytes: i64) {
        self.files_scanned.inc_by(u64::try_from(files).unwrap_or(0));
        self.bytes_scanned.inc_by(u64::try_from(bytes).unwrap_or(0));
    }

    /// A materialized view's refresh ended.
    pub(crate) fn refreshed(&self, succeeded: bool, took: Duration) {
        let status = if succeeded { "succeeded" } else { "failed" };
        self.refreshes
            .get_or_create(&StatusLabel {
                status: status.to_string(),
            })
            .inc();
        self.refresh_duration.observe(took.as_secs_f64());
    }

    /// Something the catalog did.
    pub(crate) fn catalog(&self, event: crate::catalog::CatalogEvent) {
        match event {
            crate::catalog::CatalogEvent::Committed(took) => {
                self.commit_duration.observe(took.as_secs_f64());
            }
            crate::catalog::CatalogEvent::CrawlFinished { status, took } => {
                self.crawls.get_or_create(&StatusLabel { status }).inc();
                self.crawl_duration.observe(took.as_secs_f64());
            }
        }
    }

    /// The metrics in Prometheus' text format.
    pub(crate) fn render(&self, state: &State) -> String {
        let gauge = |g: &Gauge, v: usize| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        gauge(&self.queued, state.queued);
        gauge(&self.pool_reserved, state.pool_reserved);
        gauge(&self.spill_files, state.spill_files);
        gauge(&self.spill_bytes, state.spill_bytes);
        gauge(&self.cache_bytes, state.cache_bytes);
        // Counters only go up: add what the cache counted since the last rendering.
        let catch_up = |c: &Counter<u64, AtomicU64>, total: u64| {
            let seen = c.get();
            if total > seen {
                c.inc_by(total - seen);
            }
        };
        catch_up(&self.cache_hits, state.cache_hits);
        catch_up(&self.cache_misses, state.cache_misses);
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "could not render the metrics");
        }
        out
    }
}
