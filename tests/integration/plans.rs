//! Plans Tarn makes from what the catalog knows about files, checked on catalogued lakes:
//! the plan takes the expected shape, and its answers equal those of the plan without it
//! and of a computation in the test.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::physical_plan::displayable;
use tarn_lake::engine::{Engine, EngineOptions};

use crate::common::{Env, render, write_parquet};

/// An engine over `env`'s catalog with three target partitions and `settings`.
fn engine_with(env: &Env, settings: &[(&str, &str)]) -> Engine {
    let mut config = vec![("execution.target_partitions".to_string(), "3".to_string())];
    config.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Engine::new(
        env.catalog.clone(),
        Arc::clone(&env.stores),
        &EngineOptions {
            datafusion_config: config,
            ..EngineOptions::default()
        },
    )
    .unwrap()
}

async fn physical_plan(engine: &Engine, sql: &str) -> String {
    let plan = engine
        .plan(sql, None)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    displayable(plan.as_ref()).indent(true).to_string()
}

async fn rows(engine: &Engine, sql: &str) -> Vec<Vec<String>> {
    let (_, batches) = engine.query(sql).await.unwrap();
    render(&batches)
}

/// Order lines in `files` files: file `i` holds order keys `first(i) .. first(i) + 300`
/// (keys `step` apart), one to four lines each with a quantity, in shuffled order; `None`
/// keys where `null_every` says. Returns every line written as (key, quantity).
fn write_lines(
    dir: &Path,
    files: usize,
    first: impl Fn(usize) -> i64,
    null_every: Option<usize>,
) -> Vec<(Option<i64>, i64)> {
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut all = Vec::new();
    for file in 0..files {
        let mut lines: Vec<(Option<i64>, i64)> = Vec::new();
        for key in first(file)..first(file) + 300 {
            for _ in 0..1 + next() % 4 {
                lines.push((Some(key), 1 + (next() % 50) as i64));
            }
        }
        if let Some(every) = null_every {
            for (i, line) in lines.iter_mut().enumerate() {
                if i % every == 0 {
                    line.0 = None;
                }
            }
        }
        // Not sorted within a file: only the files' ranges matter.
        for i in (1..lines.len()).rev() {
            lines.swap(i, (next() % (i as u64 + 1)) as usize);
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("order_key", DataType::Int64, true),
            Field::new("quantity", DataType::Int64, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(
                lines.iter().map(|l| l.0).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                lines.iter().map(|l| l.1).collect::<Vec<_>>(),
            )),
        ];
        write_parquet(
            &dir.join(format!("part-{file:02}.parquet")),
            &RecordBatch::try_new(schema, columns).unwrap(),
        );
        all.extend(lines);
    }
    all
}

/// The orders from `from_key` on whose lines sum to more than 100, with the sum and line
/// count, in key order (NULL first), as the engine renders them.
fn big_orders(lines: &[(Option<i64>, i64)], from_key: i64) -> Vec<Vec<String>> {
    let mut sums: BTreeMap<Option<i64>, (i64, i64)> = BTreeMap::new();
    for (key, quantity) in lines {
        if key.is_some_and(|k| k < from_key) || (key.is_none() && from_key > i64::MIN) {
            continue;
        }
        let entry = sums.entry(*key).or_default();
        entry.0 += quantity;
        entry.1 += 1;
    }
    sums.into_iter()
        .filter(|(_, (sum, _))| *sum > 100)
        .map(|(key, (sum, count))| {
            vec![
                key.map_or("NULL".to_string(), |k| k.to_string()),
                sum.to_string(),
                count.to_string(),
            ]
        })
        .collect()
}

/// [`big_orders`] in SQL.
fn big_orders_sql(table: &str, from_key: i64) -> String {
    let filter = if from_key > i64::MIN {
        format!("WHERE order_key >= {from_key}")
    } else {
        String::new()
    };
    format!(
        "SELECT order_key, sum(quantity) AS total, count(*) AS lines FROM {table} {filter} \
         GROUP BY order_key HAVING sum(quantity) > 100 ORDER BY order_key NULLS FIRST"
    )
}

#[tokio::test]
async fn files_with_disjoint_key_ranges_are_aggregated_in_one_phase() {
    let env = Env::new().await;
    let lake = env.lake();
    // 24 files, two for each of 12 disjoint ranges, written in an order unrelated to
    // their keys. Many small files, and each key in two of them: a partition that ran
    // out of files early and took another's would split those keys' groups.
    let range_of = |file: usize| (file * 5) % 24 / 2;
    let disjoint = write_lines(
        &lake.join("disjoint"),
        24,
        |i| range_of(i) as i64 * 1000,
        None,
    );
    // Ranges that overlap (each file starts 200 keys after the previous one).
    let overlapping = write_lines(&lake.join("overlapping"), 9, |i| i as i64 * 200, None);
    // Disjoint ranges, but NULL keys in every file: the NULL group would be in each.
    let with_nulls = write_lines(&lake.join("with_nulls"), 9, |i| i as i64 * 1000, Some(7));
    env.crawl(&lake).await;

    let on = engine_with(&env, &[]);
    let off = engine_with(&env, &[("tarn.one_phase_aggregates", "false")]);
    for (table, lines, one_phase, cutoff) in [
        ("disjoint", &disjoint, true, 4000),
        ("overlapping", &overlapping, false, 600),
        ("with_nulls", &with_nulls, false, 3000),
    ] {
        // Unfiltered, and with the files of the first third of the keys skipped when
        // they are opened (so the first partition runs out of work early).
        for from_key in [i64::MIN, cutoff] {
            let sql = big_orders_sql(table, from_key);
            let plan = physical_plan(&on, &sql).await;
            assert_eq!(
                plan.contains("mode=SinglePartitioned"),
                one_phase,
                "{table}:\n{plan}"
            );
            assert_eq!(
                plan.contains("mode=FinalPartitioned"),
                !one_phase,
                "{table}:\n{plan}"
            );
            let expected = big_orders(lines, from_key);
            assert!(expected.len() > 100, "{table}: a test with few groups");
            assert_eq!(rows(&on, &sql).await, expected, "{sql}");
            assert_eq!(rows(&off, &sql).await, expected, "{sql}");
        }
    }

    // One phase: as many groups as there are ranges (each range's two files in one
    // group, so each hash table holds one range's keys), in ascending order, and the
    // repartition (above the HAVING filter) gives the plan above the partitioning it had.
    let plan = physical_plan(&on, &big_orders_sql("disjoint", i64::MIN)).await;
    assert_one_group_per_range(&plan, range_of);

    // The one-phase result joined on its key gives the same answer as two phases.
    let joined = "SELECT count(*), sum(d.quantity) FROM disjoint d WHERE d.order_key IN \
        (SELECT order_key FROM disjoint GROUP BY order_key HAVING sum(quantity) > 100)";
    assert_eq!(rows(&on, joined).await, rows(&off, joined).await);
}

/// Asserts that the scan of `plan` has one file group per key range (`range_of` a file's
/// number), in ascending order, and that the hash repartition sits above the filter.
fn assert_one_group_per_range(plan: &str, range_of: impl Fn(usize) -> usize) {
    let scan = plan.lines().find(|l| l.contains("DataSourceExec")).unwrap();
    let groups: Vec<Vec<usize>> = scan
        .split("file_groups={12 groups: [")
        .nth(1)
        .unwrap()
        .split("]]")
        .next()
        .unwrap()
        .split("], [")
        .map(|g| {
            g.trim_start_matches('[')
                .split(", ")
                .map(|f| f.rsplit("part-").next().unwrap()[..2].parse().unwrap())
                .collect()
        })
        .collect();
    let ranks: Vec<Vec<usize>> = groups
        .iter()
        .map(|g| g.iter().map(|f| range_of(*f)).collect())
        .collect();
    let expected: Vec<Vec<usize>> = (0..12).map(|g| vec![g, g]).collect();
    assert_eq!(ranks, expected, "{plan}");
    let filter_line = plan.lines().position(|l| l.contains("FilterExec")).unwrap();
    let hash_line = plan
        .lines()
        .position(|l| l.contains("RepartitionExec: partitioning=Hash([order_key"))
        .unwrap();
    assert!(
        hash_line < filter_line,
        "repartition above the filter:\n{plan}"
    );
}

#[tokio::test]
async fn a_filter_evaluates_its_most_selective_range_first() {
    let env = Env::new().await;
    let lake = env.lake();
    let modes = ["MAIL", "SHIP", "AIR", "RAIL", "TRUCK"];
    let mut expected = (0i64, 0i64);
    for file in 0..4i64 {
        let days: Vec<i64> = (0..5000).map(|i| file * 5000 + i).collect();
        let mode: Vec<&str> = days.iter().map(|d| modes[(d * 7 % 5) as usize]).collect();
        for (d, m) in days.iter().zip(&mode) {
            if (*m == "MAIL" || *m == "SHIP") && (1000..2000).contains(d) {
                expected.0 += 1;
                expected.1 += d;
            }
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("day", DataType::Int64, false),
            Field::new("mode", DataType::Utf8, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(days)),
            Arc::new(arrow::array::StringArray::from(mode)),
        ];
        write_parquet(
            &lake.join(format!("shipments/part-{file}.parquet")),
            &RecordBatch::try_new(schema, columns).unwrap(),
        );
    }
    env.crawl(&lake).await;

    let sql = "SELECT count(*), sum(day) FROM shipments \
        WHERE (mode = 'MAIL' OR mode = 'SHIP') AND day >= 1000 AND day < 2000";
    let filter_of = |plan: String| {
        plan.lines()
            .find(|l| l.contains("FilterExec"))
            .unwrap()
            .to_string()
    };
    let on = engine_with(&env, &[]);
    let off = engine_with(&env, &[("tarn.order_filter_conditions", "false")]);
    // The day range keeps 1 row in 20, the modes 2 in 5: the range goes first.
    let ordered = filter_of(physical_plan(&on, sql).await);
    assert!(
        ordered.find("day@").unwrap() < ordered.find("mode@").unwrap(),
        "{ordered}"
    );
    let written = filter_of(physical_plan(&off, sql).await);
    assert!(
        written.find("mode@").unwrap() < written.find("day@").unwrap(),
        "{written}"
    );
    let expected = vec![vec![expected.0.to_string(), expected.1.to_string()]];
    assert_eq!(rows(&on, sql).await, expected);
    assert_eq!(rows(&off, sql).await, expected);
}

#[tokio::test]
async fn grouping_by_a_partition_column_is_one_phase() {
    let env = Env::new().await;
    let lake = env.lake();
    // Six regions (a string partition column), the same order keys in each.
    let mut lines = Vec::new();
    for region in ["north", "south", "east", "west", "up", "down"] {
        let written = write_lines(&lake.join(format!("sales/region={region}")), 1, |_| 0, None);
        lines.extend(written.into_iter().map(|(_, q)| (region, q)));
    }
    env.crawl(&lake).await;
    let sql = "SELECT region, count(*), sum(quantity) FROM sales GROUP BY region ORDER BY region";
    let on = engine_with(&env, &[]);
    let plan = physical_plan(&on, sql).await;
    assert!(plan.contains("mode=SinglePartitioned"), "{plan}");
    assert!(!plan.contains("mode=FinalPartitioned"), "{plan}");
    let mut expected: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for (region, quantity) in lines {
        let entry = expected.entry(region).or_default();
        entry.0 += 1;
        entry.1 += quantity;
    }
    let expected: Vec<Vec<String>> = expected
        .into_iter()
        .map(|(r, (n, q))| vec![r.to_string(), n.to_string(), q.to_string()])
        .collect();
    assert_eq!(rows(&on, sql).await, expected);
}
