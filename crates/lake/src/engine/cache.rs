//! The result cache: answers of repeated queries (a dashboard refreshing its tiles) served
//! from memory.
//!
//! An entry is keyed by the query's plan as the planner built it (so spelling, spacing and
//! bound parameter syntax do not matter, values do) together with the catalog version of
//! every table the plan reads, and of every materialized view over those tables. Any change
//! to an input (a crawl, an ingest, a view refresh) therefore makes a different key, and
//! old entries age out of the least-recently-used order. Plans that do not read only
//! catalog tables, or that call a function whose result can change between runs (`now()`,
//! `random()`), are never cached.
//!
//! Results are captured while they stream to the first caller (no second execution); a
//! result larger than an eighth of the budget, a failed query or an abandoned stream is
//! not kept.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::ViewTable;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::physical_plan::memory::MemoryStream;
use futures::Stream;

use crate::table::CatalogTable;

/// Counters and size of the cache, for `SHOW RESULT CACHE`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: usize,
    pub bytes: usize,
    pub budget: usize,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    /// Queries that could not be cached (volatile functions, non-catalog sources, results
    /// too large).
    pub uncacheable: u64,
}

#[derive(Debug)]
struct Entry {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    bytes: usize,
    last_used: u64,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    clock: u64,
    stats: CacheStats,
}

/// A bounded, least-recently-used cache of query results.
#[derive(Debug)]
pub struct ResultCache {
    /// Bytes of results kept at most (fixed at start).
    budget: usize,
    inner: Mutex<Inner>,
}

impl ResultCache {
    /// A cache holding at most `budget` bytes of Arrow data (0 disables it).
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn enabled(&self) -> bool {
        self.budget > 0
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            entries: inner.entries.len(),
            budget: self.budget,
            ..inner.stats
        }
    }

    /// Largest result kept, so one query cannot flush the whole cache.
    fn entry_limit(&self) -> usize {
        self.budget / 8
    }

    /// Counts a query that cannot be cached.
    pub fn skipped(&self) {
        self.lock().stats.uncacheable += 1;
    }

    /// The cached result for `key`, counted as a hit or a miss.
    fn get(&self, key: &str) -> Option<(SchemaRef, Vec<RecordBatch>)> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        match inner.entries.get_mut(key) {
            Some(entry) => {
                entry.last_used = now;
                let found = (Arc::clone(&entry.schema), entry.batches.clone());
                inner.stats.hits += 1;
                Some(found)
            }
            None => {
                inner.stats.misses += 1;
                None
            }
        }
    }

    fn insert(&self, key: String, schema: SchemaRef, batches: Vec<RecordBatch>, bytes: usize) {
        let mut inner = self.lock();
        if bytes > self.entry_limit() {
            inner.stats.uncacheable += 1;
            return;
        }
        inner.clock += 1;
        let last_used = inner.clock;
        if let Some(old) = inner.entries.remove(&key) {
            inner.stats.bytes -= old.bytes;
        }
        while inner.stats.bytes + bytes > self.budget {
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(old) = inner.entries.remove(&oldest) {
                inner.stats.bytes -= old.bytes;
                inner.stats.evictions += 1;
            }
        }
        inner.stats.bytes += bytes;
        inner.entries.insert(
            key,
            Entry {
                schema,
                batches,
                bytes,
                last_used,
            },
        );
    }

    /// Forgets every entry (counters are kept).
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.entries.clear();
        inner.stats.bytes = 0;
    }

    /// Answers `key` from the cache, or runs `execute` and keeps its result as it streams.
    pub async fn serve<F, Fut>(
        self: &Arc<Self>,
        key: String,
        execute: F,
    ) -> datafusion::error::Result<SendableRecordBatchStream>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = datafusion::error::Result<SendableRecordBatchStream>>,
    {
        if let Some((schema, batches)) = self.get(&key) {
            return Ok(Box::pin(MemoryStream::try_new(batches, schema, None)?));
        }
        let inner = execute().await?;
        Ok(Box::pin(Capture {
            schema: inner.schema(),
            inner,
            key: Some(key),
            batches: Vec::new(),
            bytes: 0,
            limit: self.entry_limit(),
            cache: Arc::clone(self),
        }))
    }
}

/// A result stream that keeps a copy of its batches and caches them when it ends.
struct Capture {
    inner: SendableRecordBatchStream,
    schema: SchemaRef,
    /// `None` once the result is known not to be cached.
    key: Option<String>,
    batches: Vec<RecordBatch>,
    bytes: usize,
    limit: usize,
    cache: Arc<ResultCache>,
}

impl Stream for Capture {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let polled = this.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(batch))) if this.key.is_some() => {
                this.bytes += batch.get_array_memory_size();
                if this.bytes > this.limit {
                    this.key = None;
                    this.batches = Vec::new();
                    this.cache.skipped();
                } else {
                    this.batches.push(batch.clone());
                }
            }
            Poll::Ready(Some(Err(_))) => this.key = None,
            Poll::Ready(None) => {
                if let Some(key) = this.key.take() {
                    let batches = std::mem::take(&mut this.batches);
                    this.cache
                        .insert(key, Arc::clone(&this.schema), batches, this.bytes);
                }
            }
            _ => {}
        }
        polled
    }
}

impl RecordBatchStream for Capture {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

/// A catalog table a plan reads, at the version it reads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Input {
    pub database: String,
    pub name: String,
    pub id: i64,
    pub version: i64,
    pub updated_at: String,
}

/// The catalog tables a plan reads, or `None` when the
/// plan's answer could differ between two runs over the same table versions: it reads
/// something other than catalog tables (information_schema, in-memory batches), calls a
/// volatile or time-dependent function, has unbound parameters, or is not a query.
pub(crate) fn plan_inputs(plan: &LogicalPlan) -> Option<Vec<Input>> {
    if matches!(
        plan,
        LogicalPlan::Explain(_)
            | LogicalPlan::Analyze(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Ddl(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::DescribeTable(_)
    ) {
        return None;
    }
    let mut inputs = Vec::new();
    let mut cacheable = true;
    collect_inputs(plan, &mut inputs, &mut cacheable);
    (cacheable && !inputs.is_empty()).then(|| {
        inputs.sort();
        inputs.dedup();
        inputs
    })
}

fn collect_inputs(plan: &LogicalPlan, inputs: &mut Vec<Input>, ok: &mut bool) {
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let Ok(provider) = source_as_provider(&scan.source) else {
                *ok = false;
                return Ok(TreeNodeRecursion::Stop);
            };
            if let Some(table) = provider.downcast_ref::<CatalogTable>() {
                let e = table.entry();
                inputs.push(Input {
                    database: e.database.clone(),
                    name: e.name.clone(),
                    id: e.id,
                    version: e.version,
                    updated_at: e.updated_at.clone(),
                });
            } else if let Some(view) = provider.downcast_ref::<ViewTable>() {
                collect_inputs(view.logical_plan(), inputs, ok);
            } else {
                *ok = false;
            }
        }
        let _ = node.apply_expressions(|e| {
            e.apply(|e| {
                let volatility = match e {
                    Expr::ScalarFunction(f) => Some(f.func.signature().volatility),
                    Expr::AggregateFunction(f) => Some(f.func.signature().volatility),
                    Expr::WindowFunction(_) => None,
                    Expr::Placeholder(_) => Some(Volatility::Volatile),
                    _ => None,
                };
                if volatility.is_some_and(|v| v != Volatility::Immutable) {
                    *ok = false;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        });
        Ok(if *ok {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use futures::TryStreamExt;

    fn batch(n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(0..n))]).unwrap()
    }

    async fn run(cache: &Arc<ResultCache>, key: &str, rows: i64) -> (usize, bool) {
        let executed = std::cell::Cell::new(false);
        let stream = cache
            .serve(key.to_string(), || async {
                executed.set(true);
                let b = batch(rows);
                let stream: SendableRecordBatchStream =
                    Box::pin(MemoryStream::try_new(vec![b.clone()], b.schema(), None)?);
                Ok(stream)
            })
            .await
            .unwrap();
        let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
        (batches.iter().map(|b| b.num_rows()).sum(), executed.get())
    }

    #[tokio::test]
    async fn repeats_are_served_from_memory_and_the_oldest_entries_leave_first() {
        let size = batch(1000).get_array_memory_size();
        let cache = Arc::new(ResultCache::new(size * 16));
        assert_eq!(run(&cache, "a", 1000).await, (1000, true));
        assert_eq!(run(&cache, "a", 1000).await, (1000, false));
        assert_eq!(run(&cache, "b", 1000).await, (1000, true));
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.entries), (1, 2, 2));
        // A result above an eighth of the budget is served but not kept.
        assert_eq!(run(&cache, "big", 4000).await, (4000, true));
        assert_eq!(run(&cache, "big", 4000).await, (4000, true));
        assert_eq!(cache.stats().uncacheable, 2);
        // Filling the budget evicts the least recently used ("b"; "a" was used later).
        run(&cache, "a", 1000).await;
        for k in 0..15 {
            run(&cache, &format!("k{k}"), 1000).await;
        }
        assert!(cache.stats().bytes <= size * 16);
        assert!(cache.stats().evictions >= 1);
        assert!(run(&cache, "b", 1000).await.1, "b was evicted first");
    }
}
