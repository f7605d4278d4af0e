//! The result cache: repeated queries are answered from memory until an input changes.

use crate::common::{Env, events_v1, firehose_lake, write_parquet};

const DAILY: &str =
    "SELECT day, count(*) AS n, sum(value) AS v FROM events GROUP BY day ORDER BY day";

#[tokio::test]
async fn repeated_queries_are_answered_from_the_cache_until_an_input_changes() {
    let env = Env::new().await;
    let lake = env.lake();
    firehose_lake(&lake);
    env.crawl(&lake).await;
    let stats = || env.engine.result_cache_stats();

    let first = env.rows(DAILY).await;
    assert_eq!((stats().hits, stats().misses, stats().entries), (0, 1, 1));
    // The same plan spelled differently is the same entry.
    let again = env
        .rows("select day, COUNT(*) as n, SUM(value) as v\n  from events group by day order by day")
        .await;
    assert_eq!(again, first);
    assert_eq!((stats().hits, stats().misses), (1, 1));
    // Another value is another query.
    let filtered = env
        .rows("SELECT day, count(*) AS n, sum(value) AS v FROM events WHERE hour = 13 GROUP BY day ORDER BY day")
        .await;
    assert_ne!(filtered, first);
    assert_eq!((stats().hits, stats().misses), (1, 2));

    // Time-dependent and non-catalog queries are never cached.
    let skipped = stats().uncacheable;
    let total = env
        .rows("SELECT count(*) FROM events WHERE ts IS NOT NULL")
        .await;
    for _ in 0..2 {
        let before_now = env
            .rows("SELECT count(*) FROM events WHERE ts < now()")
            .await;
        assert_eq!(before_now, total);
        env.rows("SELECT count(*) FROM information_schema.tables")
            .await;
    }
    assert_eq!(stats().uncacheable, skipped + 4);
    assert_eq!((stats().hits, stats().misses), (1, 3));
    assert_eq!(stats().hits, 1);

    // A new partition changes the table's version: the next answer includes it.
    write_parquet(
        &lake.join("events/year=2024/month=01/day=07/hour=00/part-0.parquet"),
        &events_v1(&["2024-01-07 00:05:00"], &[9], &["buy"], &[7.0]),
    );
    env.crawl(&lake).await;
    let after = env.rows(DAILY).await;
    assert_eq!(after.len(), first.len() + 1, "{after:?}");
    assert_eq!(after[..first.len()], first[..]);
    assert_eq!(after.last().map(|r| r[1].as_str()), Some("1"));
    assert_eq!((stats().hits, stats().misses), (1, 4));
    assert_eq!(env.rows(DAILY).await, after);
    assert_eq!(stats().hits, 2);

    // The engine without the rollup rewrite keeps its own entries.
    let base = env.engine.without_rollup_rewrite();
    base.query(DAILY).await.unwrap();
    assert_eq!(stats().hits, 2);

    // SHOW RESULT CACHE reports the same counters.
    let shown = env.rows("SHOW RESULT CACHE").await;
    let s = stats();
    assert_eq!(
        shown,
        vec![vec![
            s.entries.to_string(),
            s.bytes.to_string(),
            (64u64 << 20).to_string(),
            s.hits.to_string(),
            s.misses.to_string(),
            s.evictions.to_string(),
            s.uncacheable.to_string(),
        ]]
    );
}

/// A view's `max_staleness_seconds` and the result cache together: within the allowance a
/// cached answer may be the view's rows as they are; past it the answer is exact again,
/// whether or not the cache holds the older one.
#[tokio::test]
async fn an_answer_cached_within_a_views_staleness_allowance_is_not_served_past_it() {
    const ALLOWED: i64 = 2;
    let env = Env::new().await;
    let lake = env.lake();
    firehose_lake(&lake);
    env.crawl(&lake).await;
    env.rows(&format!(
        "CREATE MATERIALIZED VIEW daily WITH (max_staleness_seconds = {ALLOWED}) AS \
         SELECT day, count(*) AS n, sum(value) AS v FROM events GROUP BY day"
    ))
    .await;
    let refreshed = chrono::Utc::now();
    let before = env.rows(DAILY).await;

    // A late file lands and is crawled by another process (which does not refresh views).
    write_parquet(
        &lake.join("events/year=2024/month=01/day=06/hour=00/late.parquet"),
        &events_v1(&["2024-01-06 00:30:00"], &[9], &["buy"], &[7.0]),
    );
    env.crawl(&lake).await;
    let base = env.engine.without_rollup_rewrite();
    let exact = crate::common::render(&base.query(DAILY).await.unwrap().1);
    assert_ne!(exact, before);

    // Within the allowance the view's rows are served as they are (twice: the second from
    // the cache), when this step ran in time.
    let first = env.rows(DAILY).await;
    let second = env.rows(DAILY).await;
    if (chrono::Utc::now() - refreshed).num_seconds() < ALLOWED {
        assert_eq!(first, before, "within the allowance");
        assert_eq!(second, before);
    }

    // Past it, the answer is exact, though neither the tables nor the view changed.
    let deadline = refreshed + chrono::TimeDelta::seconds(ALLOWED + 1);
    while chrono::Utc::now() <= deadline {
        tokio::task::yield_now().await;
    }
    assert_eq!(env.rows(DAILY).await, exact, "past the allowance");
}
