//! Materialized rollups: every answer from a rollup equals the base table's answer, on a
//! fresh rollup, after new partitions and late files land, after files are deleted, and
//! with a refresh interrupted midway; EXPLAIN says which rollup was used and why not.

use std::path::Path;
use std::sync::Arc;

use arrow::array::TimestampMicrosecondArray;
use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use crate::common::{Env, render, write_parquet};

const KINDS: &[&str] = &["view", "click", "buy", "share"];
const COUNTRIES: &[Option<&str>] = &[Some("DE"), Some("FR"), None, Some("US"), Some("JP")];

/// A small deterministic generator.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// One hour of events: `rows` rows in `events/year=2024/month=MM/day=DD/hour=HH/name`.
fn write_hour(lake: &Path, day: u32, hour: u32, rows: usize, seed: u64, name: &str) {
    let mut rng = Lcg(seed);
    let start = crate::common::micros(&format!("2024-03-{day:02} {hour:02}:00:00"));
    let ts: Vec<i64> = (0..rows)
        .map(|_| start + rng.below(3_600_000_000) as i64)
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("user_id", DataType::Int64, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("country", DataType::Utf8, true),
        Field::new("amount", DataType::Int64, true),
        Field::new("value", DataType::Float64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMicrosecondArray::from(ts)),
        Arc::new(Int64Array::from_iter_values(
            (0..rows).map(|_| 1 + rng.below(40) as i64),
        )),
        Arc::new(StringArray::from_iter_values(
            (0..rows).map(|_| KINDS[rng.below(KINDS.len() as u64) as usize]),
        )),
        Arc::new(StringArray::from_iter(
            (0..rows).map(|_| COUNTRIES[rng.below(COUNTRIES.len() as u64) as usize]),
        )),
        Arc::new(Int64Array::from_iter((0..rows).map(|_| {
            let v = rng.below(1000) as i64;
            (v % 7 != 0).then_some(v)
        }))),
        Arc::new(Float64Array::from_iter_values(
            (0..rows).map(|_| rng.below(10_000) as f64 / 8.0),
        )),
    ];
    let batch = RecordBatch::try_new(schema, columns).unwrap();
    write_parquet(
        &lake.join(format!(
            "events/year=2024/month=03/day={day:02}/hour={hour:02}/{name}"
        )),
        &batch,
    );
}

/// Three days of hourly partitions (one hour is empty of files: it does not exist).
fn write_lake(lake: &Path) {
    for day in 1..=3 {
        for hour in 0..24 {
            write_hour(
                lake,
                day,
                hour,
                40,
                u64::from(day * 100 + hour),
                "part-0.parquet",
            );
        }
    }
}

const DEFINITION: &str = "CREATE MATERIALIZED VIEW ev_hourly AS \
    SELECT date_trunc('hour', ts) AS hour_start, kind, country, hour, count(*) AS n, \
           sum(amount) AS amount, count(amount) AS amounts, avg(amount) AS avg_amount, \
           min(value) AS min_value, max(value) AS max_value, max(ts) AS last_ts \
    FROM events GROUP BY 1, 2, 3, 4";

/// Dashboard queries and the rollup each one must be answered from (`None`: the base).
const DASHBOARD: &[(&str, bool)] = &[
    ("SELECT count(*) FROM events", true),
    (
        "SELECT date_trunc('hour', ts) AS h, count(*), sum(amount) FROM events \
         GROUP BY 1 ORDER BY 1",
        true,
    ),
    (
        "SELECT date_trunc('day', ts) AS d, kind, count(*) AS n, avg(amount) FROM events \
         GROUP BY 1, 2 ORDER BY 1, 2",
        true,
    ),
    (
        "SELECT date_trunc('month', ts), min(value), max(value), max(ts) FROM events GROUP BY 1",
        true,
    ),
    (
        "SELECT kind, count(*) AS n FROM events WHERE ts >= TIMESTAMP '2024-03-02 00:00:00' \
         AND ts < TIMESTAMP '2024-03-03 06:00:00' GROUP BY kind ORDER BY n DESC, kind LIMIT 3",
        true,
    ),
    (
        "SELECT country, count(amount), sum(amount) FROM events WHERE day = 2 AND hour < 12 \
         GROUP BY country ORDER BY country NULLS FIRST",
        true,
    ),
    (
        "SELECT day, hour, count(*) FROM events WHERE kind IN ('buy', 'share') \
         GROUP BY day, hour ORDER BY day, hour",
        true,
    ),
    (
        "SELECT count(*) FROM events WHERE country IS NULL AND kind = 'view'",
        true,
    ),
    // Not answerable: a finer grain, a column that is not a dimension, a misaligned range,
    // DISTINCT.
    (
        "SELECT date_trunc('minute', ts), count(*) FROM events GROUP BY 1 ORDER BY 1 LIMIT 5",
        false,
    ),
    (
        "SELECT user_id, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5",
        false,
    ),
    (
        "SELECT count(*) FROM events WHERE ts >= TIMESTAMP '2024-03-02 00:30:00'",
        false,
    ),
    ("SELECT count(DISTINCT kind) FROM events", false),
];

/// Rows rendered, floats rounded (re-aggregation may sum floats in another order), sorted.
async fn answer(engine: &tarn_lake::engine::Engine, sql: &str) -> Vec<Vec<String>> {
    let (_, batches) = engine
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut rows: Vec<Vec<String>> = render(&batches)
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|v| match v.parse::<f64>() {
                    Ok(f) if v.contains('.') => format!("{f:.6}"),
                    _ => v,
                })
                .collect()
        })
        .collect();
    rows.sort();
    rows
}

/// The `rollups` lines of EXPLAIN.
async fn notes(env: &Env, sql: &str) -> Vec<String> {
    env.rows(&format!("EXPLAIN {sql}"))
        .await
        .into_iter()
        .filter(|r| r[0] == "rollups")
        .map(|r| r[1].clone())
        .collect()
}

/// Every dashboard query gives the base table's answer, from the rollup when it can.
async fn assert_exact(env: &Env, scenario: &str) {
    assert_exact_with(env, scenario, 0).await;
}

/// As [`assert_exact`], plus `random` randomised groupings and filters.
async fn assert_exact_with(env: &Env, scenario: &str, random: usize) {
    let base = env.engine.without_rollup_rewrite();
    for (sql, uses_rollup) in DASHBOARD {
        let expected = answer(&base, sql).await;
        assert!(!expected.is_empty(), "{scenario}: {sql} returned nothing");
        let got = answer(&env.engine, sql).await;
        assert_eq!(got, expected, "{scenario}: {sql}");
        let notes = notes(env, sql).await;
        let used = notes
            .iter()
            .any(|n| n.starts_with("used default.ev_hourly"));
        assert_eq!(used, *uses_rollup, "{scenario}: {sql}: {notes:?}");
        if !uses_rollup {
            assert!(
                notes
                    .iter()
                    .any(|n| n.starts_with("not used default.ev_hourly: ")),
                "{scenario}: {sql}: EXPLAIN must say why the rollup was not used: {notes:?}"
            );
        }
    }
    random_dashboards(env, scenario, "events", random).await;
}

/// `random` dashboard queries over `from` (the base table, or a view of it), randomised
/// groupings, filters and measures, each answering as the base does without the rollup;
/// returns how many the rollup answered. `TARN_ROLLUP_QUERIES` raises the count for a long
/// run.
async fn random_dashboards(env: &Env, scenario: &str, from: &str, random: usize) -> usize {
    let random = match std::env::var("TARN_ROLLUP_QUERIES").map(|n| n.parse()) {
        Ok(Ok(n)) if random > 0 => n,
        _ => random,
    };
    let base = env.engine.without_rollup_rewrite();
    let groupings = [
        "kind",
        "country",
        "date_trunc('day', ts)",
        "date_trunc('hour', ts)",
        "date_trunc('week', ts)",
        "day",
        "hour",
    ];
    let filters = [
        "TRUE",
        "kind = 'buy'",
        "day >= 2",
        "ts >= TIMESTAMP '2024-03-01 12:00:00'",
        "ts < TIMESTAMP '2024-03-03 00:00:00'",
        "country IS NOT NULL",
        "country = 'DE' OR kind = 'view'",
    ];
    let aggregates = [
        "count(*)",
        "sum(amount)",
        "min(value)",
        "max(ts)",
        "avg(amount)",
        "count(country)",
    ];
    let mut rng = Lcg(7);
    let mut used = 0;
    for _ in 0..random {
        let g: Vec<&str> = groupings
            .iter()
            .filter(|_| rng.below(3) == 0)
            .copied()
            .collect();
        let f = filters[rng.below(filters.len() as u64) as usize];
        let a = aggregates[rng.below(aggregates.len() as u64) as usize];
        let select: Vec<&str> = g.iter().copied().chain([a]).collect();
        let mut sql = format!("SELECT {} FROM {from} WHERE {f}", select.join(", "));
        if !g.is_empty() {
            sql.push_str(&format!(" GROUP BY {}", g.join(", ")));
        }
        let expected = answer(&base, &sql).await;
        assert_eq!(
            answer(&env.engine, &sql).await,
            expected,
            "{scenario}: {sql}"
        );
        if notes(env, &sql)
            .await
            .iter()
            .any(|n| n.starts_with("used default."))
        {
            used += 1;
        }
    }
    used
}

async fn stale_partitions(env: &Env) -> i64 {
    let rows = env.rows("SHOW MATERIALIZED VIEWS").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows[0][5].parse().unwrap()
}

/// A full refresh interrupted midway, then two full refreshes racing: answers stay exact
/// throughout, and every refresh that finishes leaves the view fresh.
async fn interrupt_and_race_full_refreshes(env: &Env) {
    // A full refresh interrupted midway: answers stay exact, the next refresh completes.
    let engine = env.engine.clone();
    let task = tokio::spawn(async move {
        engine
            .refresh_rollup("default", "ev_hourly", true)
            .await
            .map(|r| r.refreshed)
    });
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    task.abort();
    let _ = task.await;
    assert_exact(env, "interrupted full refresh").await;
    env.rows("REFRESH MATERIALIZED VIEW ev_hourly").await;
    assert_eq!(stale_partitions(env).await, 0);
    assert_exact(env, "after the interrupted refresh").await;

    // Two full refreshes racing (say a server's and a CLI's): the one that commits second
    // finds a partition replaced since it read it, commits nothing and starts again, so
    // both succeed and every partition keeps one file.
    let (a, b) = tokio::join!(
        env.engine.refresh_rollup("default", "ev_hourly", true),
        env.engine.refresh_rollup("default", "ev_hourly", true)
    );
    a.unwrap();
    b.unwrap();
    assert_eq!(stale_partitions(env).await, 0);
    assert_exact(env, "after racing refreshes").await;
}

/// Without the memory budget (one-shot commands), the rollup's files are scanned, with the
/// base's answers.
async fn assert_stored_view_answers_without_memory(env: &Env) {
    // Without the memory budget (one-shot commands), the rollup's files are scanned.
    let on_files = tarn_lake::engine::Engine::new(
        env.catalog.clone(),
        Arc::clone(&env.stores),
        &tarn_lake::engine::EngineOptions::default(),
    )
    .unwrap();
    let base = env.engine.without_rollup_rewrite();
    for (sql, _) in &DASHBOARD[..4] {
        assert_eq!(
            answer(&on_files, sql).await,
            answer(&base, sql).await,
            "{sql}"
        );
        let (_, plan) = on_files.query(&format!("EXPLAIN {sql}")).await.unwrap();
        let notes = render(&plan);
        assert!(
            notes.iter().any(|r| r[0] == "rollups"
                && r[1].starts_with("used default.ev_hourly (")
                && !r[1].contains("in memory")),
            "{notes:?}"
        );
    }
}

#[tokio::test]
async fn rollup_answers_stay_exact_as_data_lands() {
    let env = Env::new().await;
    let lake = env.lake();
    write_lake(&lake);
    env.crawl(&lake).await;

    let created = env.rows(DEFINITION).await;
    assert!(
        created[0][0].contains("3 partition(s) refreshed"),
        "{created:?}"
    );
    let shown = env.rows("SHOW MATERIALIZED VIEWS").await;
    assert_eq!(shown[0][0], "default.ev_hourly");
    assert_eq!(shown[0][1], "default.events");
    // Stored per day: the base's partition columns but the finest (hour).
    assert_eq!(shown[0][4], "3", "partitions: {shown:?}");
    assert_eq!(shown[0][5], "0", "stale partitions: {shown:?}");
    // The storage table is not listed with the user's tables.
    let tables = env.rows("SHOW TABLES").await;
    assert!(
        !tables.iter().any(|r| r[2].starts_with("__rollup_")),
        "{tables:?}"
    );
    assert_exact_with(&env, "fresh rollup", 16).await;

    // The view can be queried by name: its definition's rows, answered from its storage.
    let select = &DEFINITION[DEFINITION.find("SELECT").unwrap()..];
    let by_name = "SELECT * FROM ev_hourly";
    assert_eq!(
        answer(&env.engine, by_name).await,
        answer(&env.engine.without_rollup_rewrite(), select).await
    );
    assert!(
        notes(&env, by_name).await[0].starts_with("used default.ev_hourly"),
        "{:?}",
        notes(&env, by_name).await
    );
    let listed = env.rows("SHOW TABLES").await;
    assert!(
        listed.iter().any(|r| r[2] == "ev_hourly" && r[3] == "VIEW"),
        "{listed:?}"
    );

    // A new hour lands and is crawled: until the refresh, it is read from the base.
    write_hour(&lake, 4, 0, 25, 999, "part-0.parquet");
    env.crawl(&lake).await;
    assert_eq!(stale_partitions(&env).await, 1);
    let n = notes(&env, DASHBOARD[0].0).await;
    assert!(
        n[0].contains("1 of 4 base partition(s) it has not caught up with read from the base"),
        "{n:?}"
    );
    assert!(n[0].contains(", in memory)"), "{n:?}");
    assert_exact(&env, "new partition, before refresh").await;
    let refreshed = env.rows("REFRESH MATERIALIZED VIEW ev_hourly").await;
    assert!(
        refreshed[0][0].contains("1 partition(s) refreshed")
            && refreshed[0][0].contains("3 up to date"),
        "{refreshed:?}"
    );
    assert_eq!(stale_partitions(&env).await, 0);
    assert_exact(&env, "new partition, refreshed").await;

    // A late file in an old partition.
    write_hour(&lake, 1, 5, 10, 4242, "part-late.parquet");
    env.crawl(&lake).await;
    assert_eq!(stale_partitions(&env).await, 1);
    assert_exact(&env, "late file, before refresh").await;
    env.rows("REFRESH MATERIALIZED VIEW default.ev_hourly")
        .await;
    assert_eq!(stale_partitions(&env).await, 0);
    assert_exact(&env, "late file, refreshed").await;

    // An hour's files are deleted: its rows must no longer count.
    std::fs::remove_dir_all(lake.join("events/year=2024/month=03/day=02/hour=07")).unwrap();
    env.crawl(&lake).await;
    assert_eq!(stale_partitions(&env).await, 1);
    assert_exact_with(&env, "deleted hour, before refresh", 8).await;
    env.rows("REFRESH MATERIALIZED VIEW ev_hourly").await;
    assert_exact(&env, "deleted hour, refreshed").await;
    // A whole day is deleted: its stored partition goes too.
    std::fs::remove_dir_all(lake.join("events/year=2024/month=03/day=04")).unwrap();
    env.crawl(&lake).await;
    assert_exact(&env, "deleted day, before refresh").await;
    let refreshed = env.rows("REFRESH MATERIALIZED VIEW ev_hourly").await;
    assert!(refreshed[0][0].contains("1 removed"), "{refreshed:?}");
    assert_exact(&env, "deleted day, refreshed").await;

    // A file rewritten in place (same name, other rows).
    write_hour(&lake, 3, 23, 33, 31337, "part-0.parquet");
    env.crawl(&lake).await;
    assert_eq!(stale_partitions(&env).await, 1);
    assert_exact_with(&env, "rewritten file, before refresh", 8).await;

    interrupt_and_race_full_refreshes(&env).await;

    // Changes made through Tarn refresh the rollup at once: a re-crawl by SQL, an INSERT.
    write_hour(&lake, 4, 1, 12, 77, "part-0.parquet");
    env.rows("MSCK REPAIR TABLE events").await;
    assert_eq!(stale_partitions(&env).await, 0);
    env.rows(
        "INSERT INTO events (ts, user_id, kind, country, amount, value, year, month, day, hour) \
         VALUES (TIMESTAMP '2024-03-04 02:10:00', 7, 'buy', 'DE', 5, 1.5, 2024, 3, 4, 2), \
                (TIMESTAMP '2024-03-01 00:20:00', 8, 'view', NULL, NULL, 2.5, 2024, 3, 1, 0)",
    )
    .await;
    assert_eq!(stale_partitions(&env).await, 0);
    assert_exact(&env, "after MSCK REPAIR and INSERT").await;

    assert_stored_view_answers_without_memory(&env).await;

    // A restart keeps the rollup and its freshness.
    let reopened = Env::open(env.dir).await;
    assert_eq!(stale_partitions(&reopened).await, 0);
    assert_exact(&reopened, "after a restart").await;
    let dropped = reopened.rows("DROP MATERIALIZED VIEW ev_hourly").await;
    assert!(dropped[0][0].contains("dropped"), "{dropped:?}");
    assert!(reopened.rows("SHOW MATERIALIZED VIEWS").await.is_empty());
    let n = notes(&reopened, DASHBOARD[0].0).await;
    assert!(n.is_empty(), "{n:?}");
}

/// Queries over the sketch view (`ev_users`) and the exact distinct-count view
/// (`ev_exact`), and the view each must be answered from (`None`: the base).
const DISTINCT_QUERIES: &[(&str, Option<&str>)] = &[
    (
        "SELECT date_trunc('day', ts) AS d, approx_distinct(user_id) AS u FROM events \
         GROUP BY 1 ORDER BY 1",
        Some("ev_users"),
    ),
    (
        "SELECT kind, approx_distinct(user_id), approx_distinct(country), count(*) FROM events \
         WHERE ts >= TIMESTAMP '2024-03-02 00:00:00' GROUP BY kind ORDER BY kind",
        Some("ev_users"),
    ),
    (
        "SELECT approx_distinct(user_id) FROM events",
        Some("ev_users"),
    ),
    (
        "SELECT year, month, day, kind, count(DISTINCT user_id) FROM events \
         GROUP BY year, month, day, kind ORDER BY 1, 2, 3, 4",
        Some("ev_exact"),
    ),
    (
        "SELECT day, kind, count(DISTINCT user_id) AS u FROM events WHERE kind <> 'view' \
         GROUP BY kind, day, month, year ORDER BY 1, 2",
        Some("ev_exact"),
    ),
    // Coarser than the view's groups: a kept distinct count cannot be merged.
    (
        "SELECT kind, count(DISTINCT user_id) FROM events GROUP BY kind ORDER BY kind",
        None,
    ),
    (
        "SELECT year, month, day, count(DISTINCT user_id) FROM events GROUP BY 1, 2, 3",
        None,
    ),
];

async fn assert_distinct_exact(env: &Env, scenario: &str) {
    let base = env.engine.without_rollup_rewrite();
    for (sql, view) in DISTINCT_QUERIES {
        let expected = answer(&base, sql).await;
        assert!(!expected.is_empty(), "{scenario}: {sql}");
        assert_eq!(
            answer(&env.engine, sql).await,
            expected,
            "{scenario}: {sql}"
        );
        let notes = notes(env, sql).await;
        let used: Vec<&String> = notes.iter().filter(|n| n.starts_with("used ")).collect();
        match view {
            Some(v) => assert!(
                used.len() == 1 && used[0].starts_with(&format!("used default.{v} ")),
                "{scenario}: {sql}: {notes:?}"
            ),
            None => {
                assert!(used.is_empty(), "{scenario}: {sql}: {notes:?}");
                assert!(
                    notes
                        .iter()
                        .any(|n| n.starts_with("not used default.ev_exact")
                            && n.contains("must GROUP BY exactly its groups")),
                    "{scenario}: {sql}: {notes:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn distinct_counts_are_kept_as_sketches_or_per_group() {
    let env = Env::new().await;
    let lake = env.lake();
    write_lake(&lake);
    env.crawl(&lake).await;
    env.rows(
        "CREATE MATERIALIZED VIEW ev_users AS SELECT date_trunc('hour', ts) AS h, kind, \
         approx_distinct(user_id) AS users, approx_distinct(country) AS countries, count(*) AS n \
         FROM events GROUP BY 1, 2",
    )
    .await;
    env.rows(
        "CREATE MATERIALIZED VIEW ev_exact AS SELECT year, month, day, kind, \
         count(DISTINCT user_id) AS users FROM events GROUP BY year, month, day, kind",
    )
    .await;
    assert_distinct_exact(&env, "fresh views").await;

    // Data lands (a late file in an old hour, a new day) without a refresh: the views'
    // stale partitions are computed from the base and merged with their rows.
    write_hour(&lake, 2, 5, 30, 77, "late.parquet");
    write_hour(&lake, 4, 1, 30, 78, "part-0.parquet");
    env.crawl(&lake).await;
    let shown = env.rows("SHOW MATERIALIZED VIEWS").await;
    assert!(shown.iter().all(|r| r[5] == "2"), "{shown:?}");
    assert_distinct_exact(&env, "stale views").await;

    env.rows("REFRESH MATERIALIZED VIEW ev_users").await;
    env.rows("REFRESH MATERIALIZED VIEW ev_exact").await;
    let shown = env.rows("SHOW MATERIALIZED VIEWS").await;
    assert!(shown.iter().all(|r| r[5] == "0"), "{shown:?}");
    assert_distinct_exact(&env, "refreshed views").await;
}

/// The Parquet files under `dir`, recursively, sorted.
fn parquet_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn replaced_rollup_files_outlive_their_replacement_by_a_grace_period() {
    use chrono::{TimeDelta, Utc};
    use tarn_lake::rollup::DELETE_GRACE;

    let env = Env::new().await;
    let lake = env.lake();
    write_lake(&lake);
    env.crawl(&lake).await;
    env.rows(DEFINITION).await;
    let storage = env.dir.path().join("warehouse/default/__rollup_ev_hourly");
    let before = parquet_files(&storage);
    assert_eq!(before.len(), 3, "one file per day: {before:?}");

    // A late file in day 2: that day's rollup file is replaced, but a query planned
    // before the refresh may still be reading the old one.
    write_hour(&lake, 2, 5, 30, 91, "late.parquet");
    env.crawl(&lake).await;
    env.rows("REFRESH MATERIALIZED VIEW ev_hourly").await;
    assert_eq!(parquet_files(&storage).len(), 4);
    assert_eq!(
        env.engine.sweep_deferred_deletes(Utc::now()).await.unwrap(),
        0
    );
    assert_eq!(parquet_files(&storage).len(), 4);

    // Once the grace period is over, the sweep deletes it; answers stay exact.
    let later = Utc::now() + DELETE_GRACE + TimeDelta::seconds(1);
    assert_eq!(env.engine.sweep_deferred_deletes(later).await.unwrap(), 1);
    let after = parquet_files(&storage);
    assert_eq!(after.len(), 3);
    let gone: Vec<_> = before.iter().filter(|f| !after.contains(f)).collect();
    assert_eq!(gone.len(), 1);
    assert!(gone[0].to_string_lossy().contains("day=02"), "{gone:?}");
    assert_exact(&env, "after the sweep").await;

    // A dropped view's files go the same way.
    env.rows("DROP MATERIALIZED VIEW ev_hourly").await;
    assert_eq!(parquet_files(&storage).len(), 3);
    let later = Utc::now() + DELETE_GRACE + TimeDelta::seconds(1);
    assert_eq!(env.engine.sweep_deferred_deletes(later).await.unwrap(), 3);
    assert!(parquet_files(&storage).is_empty());
}

#[tokio::test]
async fn definitions_that_cannot_be_kept_are_refused_clearly() {
    let env = Env::new().await;
    let lake = env.lake();
    write_lake(&lake);
    env.crawl(&lake).await;
    let cases = [
        (
            "CREATE MATERIALIZED VIEW v AS SELECT kind, count(DISTINCT user_id) FROM events GROUP BY kind",
            "count(DISTINCT user_id) cannot be merged across partitions, so the view must GROUP \
             BY year, month, day as well (or keep approx_distinct(user_id), which merges)",
        ),
        (
            "CREATE MATERIALIZED VIEW v AS SELECT kind, sum(DISTINCT amount) FROM events GROUP BY kind",
            "DISTINCT aggregates other than count cannot be kept",
        ),
        (
            "CREATE MATERIALIZED VIEW v AS SELECT kind, median(value) FROM events GROUP BY kind",
            "median() cannot be kept",
        ),
        (
            "CREATE MATERIALIZED VIEW v AS SELECT upper(kind), count(*) FROM events GROUP BY 1",
            "is not a column or date_trunc",
        ),
        (
            "CREATE MATERIALIZED VIEW v AS SELECT kind FROM events",
            "no GROUP BY",
        ),
        (
            "CREATE MATERIALIZED VIEW events AS SELECT kind, count(*) FROM events GROUP BY kind",
            "is a table",
        ),
        ("REFRESH MATERIALIZED VIEW nope", "does not exist"),
        ("DROP MATERIALIZED VIEW nope", "does not exist"),
    ];
    for (sql, expected) in cases {
        let err = env.engine.query(sql).await.unwrap_err().to_string();
        assert!(err.contains(expected), "{sql}: {err}");
    }
    assert!(env.rows("SHOW MATERIALIZED VIEWS").await.is_empty());
}

#[tokio::test]
async fn views_are_managed_over_the_admin_api() {
    use tarn_server::admin::proto;
    let env = Env::new().await;
    let lake = env.lake();
    write_lake(&lake);
    env.crawl(&lake).await;
    let server = crate::common::TestServer::start(env.engine.clone()).await;
    let mut admin = proto::admin_client::AdminClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();

    let created = admin
        .create_view(proto::CreateViewRequest {
            database: String::new(),
            sql: DEFINITION.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        created
            .message
            .contains("created materialized view default.ev_hourly"),
        "{created:?}"
    );
    let not_a_view = admin
        .create_view(proto::CreateViewRequest {
            database: String::new(),
            sql: "SELECT 1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(not_a_view.code(), tonic::Code::InvalidArgument);

    write_hour(&lake, 4, 0, 25, 999, "part-0.parquet");
    env.crawl(&lake).await;
    let views = admin
        .list_views(proto::ListViewsRequest {})
        .await
        .unwrap()
        .into_inner()
        .views;
    assert_eq!(views.len(), 1);
    assert_eq!(
        (
            views[0].name.as_str(),
            views[0].base_table.as_str(),
            views[0].partitions,
            views[0].stale_partitions
        ),
        ("default.ev_hourly", "default.events", 4, 1)
    );
    let refreshed = admin
        .refresh_view(proto::RefreshViewRequest {
            database: String::new(),
            name: "ev_hourly".into(),
            full: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((refreshed.refreshed, refreshed.unchanged), (1, 3));
    assert!(refreshed.rows > 0);
    let dropped = admin
        .drop_view(proto::DropViewRequest {
            database: String::new(),
            name: "ev_hourly".into(),
            if_exists: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(dropped.dropped);
    let missing = admin
        .drop_view(proto::DropViewRequest {
            database: String::new(),
            name: "ev_hourly".into(),
            if_exists: false,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_reader_cannot_create_refresh_or_drop_views_over_the_admin_api() {
    use tarn_server::admin::proto;
    use tarn_server::auth::{AuthConfig, Authenticator, Role, Signer, TokenConfig, new_api_token};
    let env = Env::new().await;
    let lake = env.lake();
    write_lake(&lake);
    env.crawl(&lake).await;
    env.rows(DEFINITION).await;
    let (admin_token, admin_digest) = new_api_token();
    let (reader_token, reader_digest) = new_api_token();
    let config = AuthConfig {
        token_ttl_secs: None,
        users: vec![],
        tokens: vec![
            TokenConfig {
                name: "ops".into(),
                sha256: admin_digest,
                role: Role::Admin,
            },
            TokenConfig {
                name: "dashboards".into(),
                sha256: reader_digest,
                role: Role::Reader,
            },
        ],
    };
    let options = tarn_server::serve::ServeOptions {
        auth: Arc::new(Authenticator::new(&config, Signer::random())),
        tls: None,
    };
    let server = crate::common::TestServer::start_with(env.engine.clone(), options).await;
    let mut admin = proto::admin_client::AdminClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    fn as_user<T>(token: &str, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }
    // A late file makes one partition stale: a refresh would change something.
    write_hour(&lake, 4, 0, 25, 999, "part-0.parquet");
    env.crawl(&lake).await;
    let stale = stale_partitions(&env).await;
    assert_eq!(stale, 1);

    let refused = |status: tonic::Status, statement: &str| {
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(
            status.message().contains(&format!(
                "'dashboards' has role reader, and {statement} needs role admin"
            )),
            "{status:?}"
        );
    };
    let create = proto::CreateViewRequest {
        database: String::new(),
        sql: DEFINITION.replace("ev_hourly", "ev_other"),
    };
    refused(
        admin
            .create_view(as_user(&reader_token, create.clone()))
            .await
            .unwrap_err(),
        "CREATE MATERIALIZED VIEW",
    );
    let refresh = proto::RefreshViewRequest {
        database: String::new(),
        name: "ev_hourly".into(),
        full: true,
    };
    refused(
        admin
            .refresh_view(as_user(&reader_token, refresh.clone()))
            .await
            .unwrap_err(),
        "REFRESH MATERIALIZED VIEW",
    );
    let drop = proto::DropViewRequest {
        database: String::new(),
        name: "ev_hourly".into(),
        if_exists: false,
    };
    refused(
        admin
            .drop_view(as_user(&reader_token, drop.clone()))
            .await
            .unwrap_err(),
        "DROP MATERIALIZED VIEW",
    );
    // Nothing changed; the reader may still list the views.
    let views = admin
        .list_views(as_user(&reader_token, proto::ListViewsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .views;
    let names: Vec<_> = views.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["default.ev_hourly"]);
    assert_eq!(views[0].stale_partitions, 1);

    // Without credentials: refused before any role is looked at.
    let anonymous = admin
        .refresh_view(tonic::Request::new(refresh.clone()))
        .await
        .unwrap_err();
    assert_eq!(
        anonymous.code(),
        tonic::Code::Unauthenticated,
        "{anonymous:?}"
    );

    // The admin may do all three.
    admin
        .create_view(as_user(&admin_token, create))
        .await
        .unwrap();
    let refreshed = admin
        .refresh_view(as_user(&admin_token, refresh))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refreshed.refreshed, 4);
    assert!(
        admin
            .drop_view(as_user(&admin_token, drop))
            .await
            .unwrap()
            .into_inner()
            .dropped
    );
    let rows = env.rows("SHOW MATERIALIZED VIEWS").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][0], "default.ev_other");
    server.stop().await.unwrap();
}

/// Every measure type a view accepts: each integer width, signed and unsigned, floats, and
/// decimals of small, medium and full precision (name, type).
fn measure_types() -> Vec<(&'static str, DataType)> {
    vec![
        ("i8", DataType::Int8),
        ("i16", DataType::Int16),
        ("i32", DataType::Int32),
        ("i64", DataType::Int64),
        ("u8", DataType::UInt8),
        ("u16", DataType::UInt16),
        ("u32", DataType::UInt32),
        ("u64", DataType::UInt64),
        ("f32", DataType::Float32),
        ("f64", DataType::Float64),
        ("d3", DataType::Decimal128(3, 1)),
        ("d9", DataType::Decimal128(9, 2)),
        ("d18", DataType::Decimal128(18, 4)),
        ("d38", DataType::Decimal128(38, 6)),
    ]
}

/// `rows` rows of every measure type (one null in five) in `m/day=DD/hour=HH/name`.
fn write_measures(lake: &Path, day: u32, hour: u32, rows: usize, seed: u64, name: &str) {
    use arrow::array::Int64Builder;
    use arrow::compute::cast;
    let mut rng = Lcg(seed);
    let start = crate::common::micros(&format!("2024-05-{day:02} {hour:02}:00:00"));
    let mut fields = vec![Field::new(
        "ts",
        DataType::Timestamp(TimeUnit::Microsecond, None),
        false,
    )];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(TimestampMicrosecondArray::from(
        (0..rows)
            .map(|_| start + rng.below(3_600_000_000) as i64)
            .collect::<Vec<_>>(),
    ))];
    for (name, data_type) in measure_types() {
        // Values 0..100 fit every type; decimals get a fraction from the cast of a float.
        let mut values = Int64Builder::new();
        for _ in 0..rows {
            match rng.below(5) {
                0 => values.append_null(),
                _ => values.append_value(rng.below(100) as i64),
            }
        }
        let ints: ArrayRef = Arc::new(values.finish());
        let column = match &data_type {
            DataType::Decimal128(_, _) | DataType::Float32 | DataType::Float64 => {
                let halves = arrow::compute::kernels::numeric::div(
                    &cast(&ints, &DataType::Float64).unwrap(),
                    &Float64Array::new_scalar(4.0),
                )
                .unwrap();
                cast(&halves, &data_type).unwrap()
            }
            _ => cast(&ints, &data_type).unwrap(),
        };
        assert_eq!(column.null_count(), ints.null_count(), "{name}");
        fields.push(Field::new(name, data_type, true));
        columns.push(column);
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    write_parquet(
        &lake.join(format!("m/day={day:02}/hour={hour:02}/{name}")),
        &batch,
    );
}

/// A view over every measure type answers exactly: fresh, with a stale partition read from
/// the base beside its rows (the mixed path), and refreshed after a crawl.
#[tokio::test]
async fn views_answer_exactly_for_every_measure_type() {
    let env = Env::new().await;
    let lake = env.lake();
    for (day, hour) in [(1, 0), (1, 1), (2, 0)] {
        write_measures(
            &lake,
            day,
            hour,
            30,
            u64::from(day * 10 + hour),
            "a.parquet",
        );
    }
    env.crawl(&lake).await;
    let mut select = vec!["date_trunc('hour', ts) AS h".to_string(), "day".into()];
    let mut queries = Vec::new();
    for (name, _) in measure_types() {
        select.extend([
            format!("count({name}) AS n_{name}"),
            format!("sum({name}) AS s_{name}"),
            format!("min({name}) AS lo_{name}"),
            format!("max({name}) AS hi_{name}"),
        ]);
        queries.push(format!(
            "SELECT date_trunc('day', ts) AS d, count({name}), sum({name}), avg({name}), \
             min({name}), max({name}) FROM m GROUP BY 1"
        ));
        queries.push(format!(
            "SELECT sum({name}), avg({name}) FROM m WHERE day = 1"
        ));
    }
    env.rows(&format!(
        "CREATE MATERIALIZED VIEW mv AS SELECT {}, count(*) AS n FROM m GROUP BY 1, 2",
        select.join(", ")
    ))
    .await;
    let check = |scenario: &'static str| {
        let env = &env;
        let queries = &queries;
        async move {
            let base = env.engine.without_rollup_rewrite();
            for sql in queries {
                let expected = answer(&base, sql).await;
                assert_eq!(
                    answer(&env.engine, sql).await,
                    expected,
                    "{scenario}: {sql}"
                );
                let notes = notes(env, sql).await;
                assert!(
                    notes.iter().any(|n| n.starts_with("used default.mv")),
                    "{scenario}: {sql}: {notes:?}"
                );
            }
        }
    };
    check("fresh view").await;

    // A late file: its partition is stale and read from the base beside the view's rows.
    write_measures(&lake, 1, 1, 12, 99, "b.parquet");
    env.crawl(&lake).await;
    assert_eq!(stale_partitions(&env).await, 1);
    check("stale partition").await;

    // The refresh after the crawl succeeds for every type.
    let failures = env.engine.refresh_stale_rollups().await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(stale_partitions(&env).await, 0);
    check("refreshed").await;
}

/// A refresh that fails is reported in the crawl's problems and history and in SHOW
/// MATERIALIZED VIEWS; until a refresh succeeds, the view answers nothing (the base does).
#[tokio::test]
async fn a_failed_refresh_is_reported_and_never_breaks_queries() {
    let env = Env::new().await;
    let lake = env.lake();
    write_lake(&lake);
    env.crawl(&lake).await;
    env.rows(DEFINITION).await;
    let day2 = "SELECT kind, count(*), sum(amount) FROM events WHERE day = 2 GROUP BY kind";
    assert!(notes(&env, day2).await[0].starts_with("used default.ev_hourly"));

    // A late file lands and is crawled; before the refresh reads it, it is overwritten with
    // bytes that are not Parquet (a writer's half-finished upload).
    let late = lake.join("events/year=2024/month=03/day=01/hour=05/late.parquet");
    write_hour(&lake, 1, 5, 10, 4242, "late.parquet");
    let mut summary = env.crawl(&lake).await;
    let good = std::fs::read(&late).unwrap();
    std::fs::write(&late, vec![b'x'; good.len()]).unwrap();
    env.engine.refresh_after_crawl(&mut summary).await;

    // The crawl's summary and its record in the history name the view and the fix.
    let problem = summary
        .problems
        .iter()
        .find(|p| p.path == "default.ev_hourly")
        .unwrap_or_else(|| panic!("{:?}", summary.problems));
    assert!(
        problem.message.contains("could not be refreshed")
            && problem
                .message
                .contains("REFRESH MATERIALIZED VIEW default.ev_hourly"),
        "{problem:?}"
    );
    let history = env.catalog.crawl_history(1).await.unwrap();
    let recorded = history[0].summary.as_deref().unwrap();
    assert!(
        recorded.contains("default.ev_hourly") && recorded.contains("could not be refreshed"),
        "{recorded}"
    );
    // SHOW MATERIALIZED VIEWS gives the error.
    let shown = env.rows("SHOW MATERIALIZED VIEWS").await;
    assert!(shown[0][8].contains("late.parquet"), "{shown:?}");

    // Queries the view would answer read the base, and say why.
    let expected = answer(&env.engine.without_rollup_rewrite(), day2).await;
    assert_eq!(answer(&env.engine, day2).await, expected);
    let n = notes(&env, day2).await;
    assert!(
        n.iter()
            .any(|n| n.starts_with("not used default.ev_hourly: its last refresh failed")),
        "{n:?}"
    );

    // The file is repaired: the next refresh succeeds, clears the error, and the view
    // answers again.
    std::fs::write(&late, &good).unwrap();
    assert!(env.engine.refresh_stale_rollups().await.is_empty());
    let shown = env.rows("SHOW MATERIALIZED VIEWS").await;
    assert_eq!(shown[0][8], "NULL", "{shown:?}");
    assert!(notes(&env, day2).await[0].starts_with("used default.ev_hourly"));
    assert_exact(&env, "repaired view").await;
}

/// A dashboard over a view (`CREATE VIEW`) of the base still gets the rollup, with the
/// base's answers; a materialized view defined over a view works as over its base.
#[tokio::test]
async fn views_of_the_base_get_the_rollup() {
    let env = Env::new().await;
    let lake = env.lake();
    write_lake(&lake);
    env.crawl(&lake).await;
    env.rows(DEFINITION).await;
    env.rows(
        "CREATE VIEW recent AS SELECT ts, kind, country, amount, value, day, hour \
         FROM events WHERE day >= 2",
    )
    .await;
    let base = env.engine.without_rollup_rewrite();
    for sql in [
        "SELECT date_trunc('day', ts) AS d, kind, count(*) AS n, sum(amount) FROM recent \
         GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT country, count(amount) FROM recent WHERE hour < 12 GROUP BY country",
    ] {
        assert_eq!(
            answer(&env.engine, sql).await,
            answer(&base, sql).await,
            "{sql}"
        );
        let n = notes(&env, sql).await;
        assert!(
            n.iter().any(|n| n.starts_with("used default.ev_hourly")),
            "{sql}: {n:?}"
        );
    }
    let used = random_dashboards(&env, "over a view", "recent", 24).await;
    assert!(
        used > 0,
        "no random dashboard over the view used the rollup"
    );

    // A materialized view over the view: its rows are the view's, and dashboards over the
    // view use it.
    let created = env
        .rows(
            "CREATE MATERIALIZED VIEW by_kind AS SELECT date_trunc('hour', ts) AS h, day, \
             hour, kind, count(*) AS n FROM recent GROUP BY 1, 2, 3, 4",
        )
        .await;
    assert!(created[0][0].contains("refreshed"), "{created:?}");
    // Its rows are the view's (the view's WHERE kept), read by name from its storage.
    let select = "SELECT date_trunc('hour', ts) AS h, day, hour, kind, count(*) AS n \
                  FROM events WHERE day >= 2 GROUP BY 1, 2, 3, 4";
    assert_eq!(
        answer(&env.engine, "SELECT h, day, hour, kind, n FROM by_kind").await,
        answer(&base, select).await
    );
    let sql = "SELECT kind, count(*) FROM recent GROUP BY kind";
    assert_eq!(answer(&env.engine, sql).await, answer(&base, sql).await);
    let n = notes(&env, sql).await;
    assert!(n.iter().any(|n| n.starts_with("used default.")), "{n:?}");
}
