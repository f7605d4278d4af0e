//! The query history: statements recorded as they end, read back as `system.queries`,
//! where a reader sees only their own.

use std::sync::Arc;

use futures::TryStreamExt;
use tarn_lake::engine::history::QueryLabel;
use tarn_lake::engine::limits::QueryLimits;
use tarn_lake::engine::{Engine, EngineOptions, Statement};

use crate::common::{Env, render};

fn engine(env: &Env, limits: QueryLimits) -> Engine {
    engine_with(
        env,
        EngineOptions {
            limits,
            ..EngineOptions::default()
        },
    )
}

fn engine_with(env: &Env, options: EngineOptions) -> Engine {
    Engine::new(
        env.catalog.clone(),
        Arc::clone(&env.stores),
        &EngineOptions {
            history_retention: Some(chrono::TimeDelta::days(1)),
            ..options
        },
    )
    .unwrap()
}

fn as_user(engine: &Engine, user: &str, admin: bool, sql: &str) -> Engine {
    engine.labelled(QueryLabel::new(user, admin, sql, "flight"))
}

/// Runs `sql` as `user`, as a front door does (a planning failure recorded too).
async fn run(
    engine: &Engine,
    user: &str,
    admin: bool,
    sql: &str,
) -> tarn_lake::Result<Vec<Vec<String>>> {
    let engine = as_user(engine, user, admin, sql);
    let prepared = engine.prepare(sql, None).await;
    if let Err(e) = &prepared {
        engine.record_failure(e);
    }
    let Statement::Query(df) = prepared? else {
        panic!("a query");
    };
    let batches: Vec<_> = engine.execute(*df).await?.try_collect().await?;
    Ok(render(&batches))
}

const HISTORY: &str = "SELECT user_name, query, state, rows_returned, error IS NOT NULL \
                       FROM system.queries WHERE query NOT LIKE '%system.queries%' \
                       ORDER BY submitted_at, query";

#[tokio::test]
async fn statements_are_recorded_with_their_outcome_and_readers_see_only_their_own() {
    let env = Env::new().await;
    crate::common::firehose_lake(&env.lake());
    env.crawl(&env.lake()).await;
    let engine = engine(&env, QueryLimits::default());

    let users = run(&engine, "bob", false, "SELECT user_id FROM users")
        .await
        .unwrap();
    run(&engine, "bob", false, "SELECT nope FROM users")
        .await
        .unwrap_err();
    run(&engine, "alice", true, "SELECT count(*) FROM events")
        .await
        .unwrap();
    run(
        &engine,
        "alice",
        true,
        "SELECT CAST(kind AS INT) FROM events",
    )
    .await
    .unwrap_err();
    // A query whose client stops reading is recorded as cancelled.
    {
        let sql = "SELECT * FROM events";
        let alice = as_user(&engine, "alice", true, sql);
        let Statement::Query(df) = alice.prepare(sql, None).await.unwrap() else {
            panic!("a query");
        };
        drop(alice.execute(*df).await.unwrap());
    }

    let bob_rows = users.len().to_string();
    let seen_by_bob = run(&engine, "bob", false, HISTORY).await.unwrap();
    assert_eq!(
        seen_by_bob,
        vec![
            vec![
                "bob",
                "SELECT user_id FROM users",
                "finished",
                bob_rows.as_str(),
                "false"
            ],
            vec!["bob", "SELECT nope FROM users", "failed", "0", "true"],
        ]
    );
    let seen_by_alice = run(&engine, "alice", true, HISTORY).await.unwrap();
    let states: Vec<(&str, &str)> = seen_by_alice
        .iter()
        .map(|r| (r[0].as_str(), r[2].as_str()))
        .collect();
    assert_eq!(
        states,
        vec![
            ("bob", "finished"),
            ("bob", "failed"),
            ("alice", "finished"),
            ("alice", "failed"),
            ("alice", "cancelled"),
        ]
    );
    // The error names the column for the failed plan.
    let errors = run(
        &engine,
        "alice",
        true,
        "SELECT error FROM system.queries WHERE query = 'SELECT nope FROM users'",
    )
    .await
    .unwrap();
    assert!(errors[0][0].contains("nope"), "{errors:?}");
}

#[tokio::test]
async fn a_refused_query_is_recorded_as_refused() {
    let env = Env::new().await;
    crate::common::firehose_lake(&env.lake());
    env.crawl(&env.lake()).await;
    let engine = engine(
        &env,
        QueryLimits {
            max_concurrent: Some(1),
            ..QueryLimits::default()
        },
    );
    let sql = "SELECT * FROM events";
    let holder = as_user(&engine, "alice", true, sql);
    let Statement::Query(df) = holder.prepare(sql, None).await.unwrap() else {
        panic!("a query");
    };
    let running = holder.execute(*df).await.unwrap();
    run(&engine, "bob", false, "SELECT count(*) FROM users")
        .await
        .unwrap_err();
    drop(running);
    let seen = run(
        &engine,
        "bob",
        false,
        "SELECT state FROM system.queries WHERE query = 'SELECT count(*) FROM users'",
    )
    .await
    .unwrap();
    assert_eq!(seen, vec![vec!["refused"]]);
}

/// One statement's row of `system.queries` (the newest with this text), as `column=value`.
async fn stats_of(engine: &Engine, sql: &str) -> std::collections::BTreeMap<String, String> {
    let query = format!(
        "SELECT * FROM system.queries WHERE query = '{}' ORDER BY submitted_at DESC LIMIT 1",
        sql.replace('\'', "''")
    );
    let engine = as_user(engine, "alice", true, &query);
    let (schema, batches) = engine.query(&query).await.unwrap();
    let rows = render(&batches);
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .zip(rows[0].iter().cloned())
        .collect()
}

fn number(stats: &std::collections::BTreeMap<String, String>, column: &str) -> i64 {
    stats[column]
        .parse()
        .unwrap_or_else(|_| panic!("{column}: {stats:?}"))
}

#[tokio::test]
async fn statements_are_recorded_with_what_they_scanned_pruned_and_held() {
    let env = Env::new().await;
    crate::common::firehose_lake(&env.lake());
    env.crawl(&env.lake()).await;
    let warehouse = env.dir.path().join("warehouse");
    let engine = engine_with(
        &env,
        EngineOptions {
            warehouse: Some(warehouse.to_string_lossy().into_owned()),
            result_cache: 64 << 20,
            memory: Some(tarn_lake::engine::limits::MemoryLimit {
                bytes: 1 << 30,
                spill_dir: None,
            }),
            ..EngineOptions::default()
        },
    );
    let files_of_day_5 = 2;
    let sql = "SELECT kind, count(*) AS n FROM events WHERE day = 5 GROUP BY kind ORDER BY kind";
    let first = run(&engine, "bob", false, sql).await.unwrap();
    let stats = stats_of(&engine, sql).await;
    assert_eq!(stats["state"], "finished", "{stats:?}");
    assert_eq!(stats["front_door"], "flight");
    assert_eq!(number(&stats, "rows_returned"), first.len() as i64);
    assert!(number(&stats, "bytes_returned") > 0, "{stats:?}");
    assert_eq!(number(&stats, "files_scanned"), files_of_day_5, "{stats:?}");
    // Two hours of day 5 read, day 6's hour left out by the partition filter.
    assert_eq!(number(&stats, "partitions_scanned"), 2, "{stats:?}");
    assert_eq!(number(&stats, "partitions_pruned"), 1, "{stats:?}");
    let on_disk: u64 = ["hour=13", "hour=14"]
        .iter()
        .map(|h| {
            std::fs::metadata(env.lake().join(format!(
                "events/year=2024/month=01/day=05/{h}/part-0.parquet"
            )))
            .unwrap()
            .len()
        })
        .sum();
    let scanned = number(&stats, "bytes_scanned");
    assert!(
        scanned > 0 && scanned as u64 <= on_disk,
        "{scanned} of {on_disk}: {stats:?}"
    );
    assert_eq!(stats["result_cache_hit"], "false");
    assert!(number(&stats, "peak_memory_bytes") > 0, "{stats:?}");
    assert_eq!(stats["materialized_view"], "NULL");

    // The same query again is the result cache's: nothing scanned.
    assert_eq!(run(&engine, "bob", false, sql).await.unwrap(), first);
    let again = stats_of(&engine, sql).await;
    assert_eq!(again["result_cache_hit"], "true", "{again:?}");
    assert_eq!(number(&again, "files_scanned"), 0, "{again:?}");

    // A query a materialized view answers names it.
    let define = "CREATE MATERIALIZED VIEW by_kind AS SELECT kind, day, count(*) AS n \
                  FROM events GROUP BY kind, day";
    run_statement(&engine, define).await;
    let dashboard = "SELECT kind, count(*) FROM events GROUP BY kind ORDER BY kind";
    run(&engine, "bob", false, dashboard).await.unwrap();
    let viewed = stats_of(&engine, dashboard).await;
    assert_eq!(viewed["materialized_view"], "default.by_kind", "{viewed:?}");
}

async fn run_statement(engine: &Engine, sql: &str) {
    match engine.prepare(sql, None).await.unwrap() {
        Statement::Command(c) => {
            engine.run_statement(&c, &[]).await.unwrap();
        }
        Statement::Query(_) => panic!("{sql} is a statement"),
    }
}

#[tokio::test]
async fn running_statements_are_shown_until_they_end_and_operators_that_spill_say_so() {
    let env = Env::new().await;
    crate::common::firehose_lake(&env.lake());
    env.crawl(&env.lake()).await;
    let engine = engine_with(
        &env,
        EngineOptions {
            memory: Some(tarn_lake::engine::limits::MemoryLimit {
                bytes: 4 << 20,
                spill_dir: None,
            }),
            ..EngineOptions::default()
        },
    );
    // 300,000 groups do not fit in 4 MiB: the aggregation spills.
    let grouped = "SELECT count(*) FROM (SELECT value % 300000 AS k, count(*) AS n \
                   FROM generate_series(1, 900000) GROUP BY 1)";
    assert_eq!(
        run(&engine, "alice", true, grouped).await.unwrap(),
        vec![vec!["300000"]]
    );
    let spilled = stats_of(&engine, grouped).await;
    assert!(number(&spilled, "spilled_bytes") > 0, "{spilled:?}");
    // The pool's limit holds for what may be refused; operators also take small
    // reservations that cannot be (infallible growth), so the peak may pass it a little.
    let peak = number(&spilled, "peak_memory_bytes");
    assert!(peak > 0 && peak <= 8 << 20, "{spilled:?}");

    let sql = "SELECT * FROM events";
    let alice = as_user(&engine, "alice", true, sql);
    let Statement::Query(df) = alice.prepare(sql, None).await.unwrap() else {
        panic!("a query");
    };
    let held = alice.execute(*df).await.unwrap();
    assert_eq!(stats_of(&engine, sql).await["state"], "running");
    // Not another reader's to see.
    let bobs = run(
        &engine,
        "bob",
        false,
        "SELECT count(*) FROM system.queries WHERE query = 'SELECT * FROM events'",
    )
    .await
    .unwrap();
    assert_eq!(bobs, vec![vec!["0"]]);
    drop(held);
    assert_eq!(stats_of(&engine, sql).await["state"], "cancelled");
}

/// Writers that read before they write (`DROP DATABASE` looks the database up first) wait
/// for a concurrent history write instead of failing at once with "database is locked":
/// SQLite cannot turn a read snapshot that another connection has since written past into
/// a write, and its busy timeout does not cover that case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_writers_that_read_first_wait_for_concurrent_history_writes() {
    use tarn_lake::catalog::{Catalog, QueryRecord};
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::open(dir.path()).await.unwrap();
    let history = {
        let catalog = catalog.clone();
        tokio::spawn(async move {
            for i in 0..400 {
                let record = QueryRecord {
                    query_id: format!("q{i}"),
                    user: "tester".into(),
                    database: "default".into(),
                    sql: "SELECT 1".into(),
                    state: "finished".into(),
                    submitted_at: "2026-12-06T00:00:00Z".into(),
                    queued_ms: 0,
                    execution_ms: 1,
                    rows: 1,
                    error: None,
                    stats: Default::default(),
                };
                catalog.record_queries(&[record], None).await?;
            }
            Ok::<_, tarn_lake::catalog::Error>(())
        })
    };
    for i in 0..150 {
        let name = format!("db{i}");
        catalog.create_database(&name, false).await.unwrap();
        catalog.drop_database(&name, false, false).await.unwrap();
    }
    history.await.unwrap().unwrap();
}
