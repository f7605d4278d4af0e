//! What one query may take from a shared engine: a place among running queries (with a
//! bounded FIFO queue), time, and memory (a pool with spilling).

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::execution::SendableRecordBatchStream;
use futures::TryStreamExt;
use tarn_lake::Error;
use tarn_lake::engine::limits::{MemoryLimit, QueryLimits};
use tarn_lake::engine::{Engine, EngineOptions, Statement};

use crate::common::{Env, render, write_parquet};

/// An environment with a table `t(v)` of 4 files of 1,000 rows.
async fn env_with_table() -> Env {
    let env = Env::new().await;
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    for file in 0..4i64 {
        let values: ArrayRef =
            Arc::new(Int64Array::from_iter_values(file * 1000..(file + 1) * 1000));
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![values]).unwrap();
        write_parquet(&env.lake().join(format!("t/part-{file}.parquet")), &batch);
    }
    env.crawl(&env.lake()).await;
    env
}

fn engine(env: &Env, memory: Option<MemoryLimit>, limits: QueryLimits) -> Engine {
    Engine::new(
        env.catalog.clone(),
        Arc::clone(&env.stores),
        &EngineOptions {
            memory,
            limits,
            ..EngineOptions::default()
        },
    )
    .unwrap()
}

/// Plans and starts `sql` (its stream not yet read).
async fn start(engine: &Engine, sql: &str) -> tarn_lake::Result<SendableRecordBatchStream> {
    let Statement::Query(df) = engine.prepare(sql, None).await? else {
        panic!("a query");
    };
    engine.execute(*df).await
}

async fn run(engine: &Engine, sql: &str) -> tarn_lake::Result<Vec<Vec<String>>> {
    let batches: Vec<RecordBatch> = start(engine, sql).await?.try_collect().await?;
    Ok(render(&batches))
}

fn one_place(max_queued: usize, queue_timeout: Duration) -> QueryLimits {
    QueryLimits {
        max_concurrent: Some(1),
        max_queued,
        queue_timeout,
        query_timeout: None,
    }
}

#[tokio::test]
async fn past_the_queue_a_query_is_refused_at_once_and_select_1_never_waits() {
    let env = env_with_table().await;
    let engine = engine(&env, None, one_place(0, Duration::from_secs(3600)));
    // The first query holds the only place while its stream is alive.
    let running = start(&engine, "SELECT sum(v) FROM t").await.unwrap();
    let refused = run(&engine, "SELECT count(*) FROM t").await.unwrap_err();
    assert!(
        matches!(&refused, Error::ResourceExhausted(m) if m.contains("too many queries")),
        "{refused}"
    );
    // Queries that read no table do not need a place.
    assert_eq!(run(&engine, "SELECT 1").await.unwrap(), vec![vec!["1"]]);
    let tables = run(
        &engine,
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 't'",
    )
    .await
    .unwrap();
    assert_eq!(tables, vec![vec!["1"]]);
    // Once the first ends, the place is free again.
    let first: Vec<RecordBatch> = running.try_collect().await.unwrap();
    assert_eq!(
        render(&first),
        vec![vec![(0..4000i64).sum::<i64>().to_string()]]
    );
    assert_eq!(
        run(&engine, "SELECT count(*) FROM t").await.unwrap(),
        vec![vec!["4000"]]
    );
}

#[tokio::test]
async fn a_queued_query_runs_when_a_place_frees_and_is_refused_after_the_queue_timeout() {
    let env = env_with_table().await;
    let patient = engine(&env, None, one_place(1, Duration::from_secs(3600)));
    let running = start(&patient, "SELECT sum(v) FROM t").await.unwrap();
    let queued = {
        let engine = patient.clone();
        tokio::spawn(async move { run(&engine, "SELECT count(*) FROM t").await })
    };
    // The second query is in the queue (nothing else can make the count 1).
    while patient.queries_waiting() == 0 {
        tokio::task::yield_now().await;
    }
    // A third finds the queue full, and is refused at once (not after the hour it would
    // wait in the queue).
    let refused = tokio::time::timeout(
        Duration::from_secs(60),
        run(&patient, "SELECT max(v) FROM t"),
    )
    .await
    .expect("a full queue refuses at once")
    .unwrap_err();
    assert!(matches!(refused, Error::ResourceExhausted(_)), "{refused}");
    drop(running);
    assert_eq!(queued.await.unwrap().unwrap(), vec![vec!["4000"]]);
    assert_eq!(patient.queries_waiting(), 0);

    // With a short queue timeout, a query that waits behind one that never ends is refused.
    let hasty = engine(&env, None, one_place(1, Duration::from_millis(50)));
    let _running = start(&hasty, "SELECT sum(v) FROM t").await.unwrap();
    let refused = run(&hasty, "SELECT count(*) FROM t").await.unwrap_err();
    assert!(
        matches!(&refused, Error::ResourceExhausted(m) if m.contains("waited 50 ms")),
        "{refused}"
    );
}

#[tokio::test]
async fn a_query_past_the_timeout_is_cancelled_and_frees_its_place() {
    let env = env_with_table().await;
    let limits = QueryLimits {
        query_timeout: Some(Duration::from_millis(300)),
        ..one_place(0, Duration::ZERO)
    };
    let engine = engine(&env, None, limits);
    // Ten billion rows: far more than anything can count in 300 ms (a broken timeout
    // fails the test at the outer deadline instead of running for hours).
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        run(
            &engine,
            "SELECT count(*) FROM t CROSS JOIN generate_series(1, 10000000000)",
        ),
    )
    .await
    .expect("the query is stopped by its 300 ms timeout, long before a minute")
    .unwrap_err();
    assert!(
        matches!(&err, Error::Timeout(m) if m.contains("300 ms") && m.contains("--query-timeout")),
        "{err}"
    );
    // Its place was given back: the only place is free for the next query.
    assert_eq!(
        run(&engine, "SELECT count(*) FROM t").await.unwrap(),
        vec![vec!["4000"]]
    );
}

#[tokio::test]
async fn an_aggregation_larger_than_the_pool_spills_and_a_join_that_cannot_fails_alone() {
    let env = env_with_table().await;
    let spill = env.dir.path().join("spill");
    std::fs::create_dir_all(&spill).unwrap();
    let memory = MemoryLimit {
        bytes: 4 << 20,
        spill_dir: Some(spill.clone()),
    };
    let engine = engine(&env, Some(memory), QueryLimits::default());
    // 300,000 groups need far more than 4 MiB of hash table; the aggregation spills
    // (sorted runs merged) and still gives every group.
    let grouped = run(
        &engine,
        "SELECT count(*), sum(n), min(k), max(k) FROM (SELECT value % 300000 AS k, count(*) AS n \
         FROM generate_series(1, 900000) GROUP BY 1)",
    )
    .await
    .unwrap();
    assert_eq!(grouped, vec![vec!["300000", "900000", "0", "299999"]]);
    let analyzed = run(
        &engine,
        "EXPLAIN ANALYZE SELECT value % 300000 AS k, count(*) FROM generate_series(1, 900000) \
         GROUP BY 1",
    )
    .await
    .unwrap();
    let spills: u64 = analyzed
        .iter()
        .flat_map(|row| row.iter())
        .flat_map(|text| text.split(", "))
        .filter_map(|metric| metric.strip_prefix("spill_count="))
        .filter_map(|n| n.trim_end_matches(']').parse::<u64>().ok())
        .sum();
    assert!(spills > 0, "the aggregation did not spill: {analyzed:?}");
    // A hash join's build side cannot spill: past the pool the query fails alone, naming
    // the limit.
    let err = run(
        &engine,
        "SELECT count(*) FROM generate_series(1, 2000000) a JOIN generate_series(1, 2000000) b \
         ON a.value = b.value",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, Error::ResourceExhausted(m) if m.contains("4.0 MiB") && m.contains("--memory-limit")),
        "{err}"
    );
    // The engine goes on, and spill files are gone once queries end.
    assert_eq!(
        run(&engine, "SELECT count(*) FROM t").await.unwrap(),
        vec![vec!["4000"]]
    );
    // A failed query's tasks are aborted as its stream is dropped and close their spill
    // files as they unwind, a moment after the error reached the client: wait for that
    // (never longer than a minute), without a fixed sleep.
    let gone = tokio::time::timeout(Duration::from_secs(60), async {
        while !walk(&spill).is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let left: Vec<_> = walk(&spill);
    assert!(
        gone.is_ok() && left.is_empty(),
        "spill files left: {left:?}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
