//! What one query cost, measured as it runs, for the query history: the partitions its
//! scans read and left out (noted by the catalog tables as they are planned), the
//! materialized view that answered (noted by Tarn's query planner), its memory (a pool of
//! its own in front of the server's, which counts what the query holds and its peak), and
//! from its physical plan once it ends, the files and bytes it scanned and the bytes its
//! operators spilled.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::physical_plan::ExecutionPlan;

use crate::catalog::QueryStats;

/// One query's measurements; a session-config extension of the state it is planned with.
#[derive(Debug, Default)]
pub(crate) struct QueryProbe {
    partitions_scanned: AtomicU64,
    partitions_pruned: AtomicU64,
    views: Mutex<Vec<String>>,
    plan: Mutex<Option<Arc<dyn ExecutionPlan>>>,
    /// Whether the query was planned and run (not answered by the result cache).
    ran: AtomicBool,
    held: AtomicUsize,
    peak: AtomicUsize,
}

/// What the plan says the query read, once it has run.
#[derive(Debug, Default, PartialEq, Eq)]
struct Scanned {
    files: u64,
    bytes: u64,
    spilled: u64,
}

impl QueryProbe {
    /// A scan of a partitioned table read `kept` of its `total` partitions.
    pub(crate) fn partitions(&self, kept: usize, total: usize) {
        self.partitions_scanned
            .fetch_add(kept as u64, Ordering::Relaxed);
        self.partitions_pruned
            .fetch_add(total.saturating_sub(kept) as u64, Ordering::Relaxed);
    }

    /// The materialized view `name` (`db.view`) answers part of the query.
    pub(crate) fn answered_by(&self, name: String) {
        if let Ok(mut views) = self.views.lock()
            && !views.contains(&name)
        {
            views.push(name);
        }
    }

    /// The query's physical plan, about to run.
    pub(crate) fn ran(&self, plan: &Arc<dyn ExecutionPlan>) {
        self.ran.store(true, Ordering::Relaxed);
        if let Ok(mut slot) = self.plan.lock() {
            *slot = Some(Arc::clone(plan));
        }
    }

    /// Whether the result came from the result cache (the query was never planned).
    pub(crate) fn cache_hit(&self) -> bool {
        !self.ran.load(Ordering::Relaxed)
    }

    /// `runtime` with a memory pool that counts this query's reservations before passing
    /// them to the server's pool.
    pub(crate) fn runtime(
        self: &Arc<Self>,
        runtime: &RuntimeEnv,
    ) -> datafusion::error::Result<Arc<RuntimeEnv>> {
        let pool = Arc::new(QueryPool {
            inner: Arc::clone(&runtime.memory_pool),
            probe: Arc::clone(self),
        });
        RuntimeEnvBuilder::from_runtime_env(runtime)
            .with_memory_pool(pool)
            .build_arc()
    }

    fn grew(&self, bytes: usize) {
        let now = self.held.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn shrank(&self, bytes: usize) {
        // Never below zero, whatever the order of concurrent updates.
        let _ = self
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                Some(h.saturating_sub(bytes))
            });
    }

    /// The statistics of the query so far (its front door and planning time are the
    /// caller's to fill).
    pub(crate) fn stats(&self) -> QueryStats {
        let plan = self.plan.lock().ok().and_then(|p| p.clone());
        let mut scanned = Scanned::default();
        if let Some(plan) = &plan {
            scan_metrics(plan, &mut scanned);
        }
        let views = self.views.lock().map(|v| v.join(", ")).unwrap_or_default();
        QueryStats {
            bytes_scanned: clamp(scanned.bytes),
            files_scanned: clamp(scanned.files),
            partitions_scanned: clamp(self.partitions_scanned.load(Ordering::Relaxed)),
            partitions_pruned: clamp(self.partitions_pruned.load(Ordering::Relaxed)),
            materialized_view: (!views.is_empty()).then_some(views),
            result_cache_hit: self.cache_hit(),
            peak_memory_bytes: clamp(self.peak.load(Ordering::Relaxed) as u64),
            spilled_bytes: clamp(scanned.spilled),
            ..QueryStats::default()
        }
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Files and bytes read by the plan's scans (Parquet: the bytes its readers fetched; text
/// formats: their files' sizes), and bytes spilled by its operators.
fn scan_metrics(plan: &Arc<dyn ExecutionPlan>, out: &mut Scanned) {
    let metrics = plan.metrics();
    if let Some(m) = &metrics {
        out.spilled += m.spilled_bytes().unwrap_or(0) as u64;
    }
    if let Some(config) = plan
        .downcast_ref::<DataSourceExec>()
        .and_then(|d| d.data_source().downcast_ref::<FileScanConfig>())
    {
        let files = config.file_groups.iter().flat_map(|g| g.iter());
        if config.file_source().file_type() == "parquet" {
            out.files += files.count() as u64;
            out.bytes += metrics
                .as_ref()
                .and_then(|m| m.sum_by_name("bytes_scanned"))
                .map_or(0, |v| v.as_usize() as u64);
        } else {
            for file in files {
                out.files += 1;
                out.bytes += file.object_meta.size;
            }
        }
    }
    for child in plan.children() {
        scan_metrics(child, out);
    }
}

/// A query's view of the server's memory pool: every reservation passes through to it
/// (limits, fairness and spilling are the server pool's), and is counted on the way.
struct QueryPool {
    inner: Arc<dyn MemoryPool>,
    probe: Arc<QueryProbe>,
}

impl fmt::Debug for QueryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryPool")
            .field("inner", &self.inner)
            .finish()
    }
}

impl fmt::Display for QueryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner)
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional);
        self.probe.grew(additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink);
        self.probe.shrank(shrink);
    }

    fn try_grow(
        &self,
        reservation: &MemoryReservation,
        additional: usize,
    ) -> datafusion::error::Result<()> {
        self.inner.try_grow(reservation, additional)?;
        self.probe.grew(additional);
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}

#[cfg(test)]
mod tests {
    // Test code: a failed setup should stop the test at once.
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    #[test]
    fn the_query_pool_counts_its_peak_and_passes_limits_through() {
        let server: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1000));
        let probe = Arc::new(QueryProbe::default());
        let pool: Arc<dyn MemoryPool> = Arc::new(QueryPool {
            inner: Arc::clone(&server),
            probe: Arc::clone(&probe),
        });
        let a = MemoryConsumer::new("a").register(&pool);
        let b = MemoryConsumer::new("b").register(&pool);
        a.try_grow(600).unwrap();
        b.try_grow(300).unwrap();
        // The server's limit still holds, and a refused reservation is not counted.
        assert!(b.try_grow(200).is_err());
        assert_eq!(server.reserved(), 900);
        a.shrink(500);
        b.grow(50);
        drop(a);
        drop(b);
        assert_eq!(server.reserved(), 0);
        let stats = probe.stats();
        assert_eq!(stats.peak_memory_bytes, 900);
        assert_eq!(probe.held.load(Ordering::Relaxed), 0);
        assert!(stats.result_cache_hit, "nothing ran");
    }
}
