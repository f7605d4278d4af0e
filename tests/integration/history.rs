//! The query history: statements recorded as they end, read back as `system.queries`,
//! where a reader sees only their own.

use std::sync::Arc;

use futures::TryStreamExt;
use tarn::engine::history::QueryLabel;
use tarn::engine::limits::QueryLimits;
use tarn::engine::{Engine, EngineOptions, Statement};

use crate::common::{Env, render};

fn engine(env: &Env, limits: QueryLimits) -> Engine {
    Engine::new(
        env.catalog.clone(),
        Arc::clone(&env.stores),
        &EngineOptions {
            history_retention: Some(chrono::TimeDelta::days(1)),
            limits,
            ..EngineOptions::default()
        },
    )
    .unwrap()
}

fn as_user(engine: &Engine, user: &str, admin: bool, sql: &str) -> Engine {
    engine.labelled(QueryLabel {
        user: user.into(),
        admin,
        sql: sql.into(),
    })
}

/// Runs `sql` as `user`, as a front door does (a planning failure recorded too).
async fn run(
    engine: &Engine,
    user: &str,
    admin: bool,
    sql: &str,
) -> tarn::Result<Vec<Vec<String>>> {
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
