//! Delta tables written by deltalake's Rust writer: crawled from the log, read at the
//! catalogued version, time travel, checkpoints, re-crawls and repairs, and DDL refusals.
// `expected(&[0..300])` lists the id ranges a table holds; one range is a list of one.
#![allow(clippy::single_range_in_vec_init)]

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;
use url::Url;

use crate::common::Env;

fn orders(ids: std::ops::Range<i64>) -> RecordBatch {
    let regions = ["eu", "us", "apac"];
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("region", DataType::Utf8, true),
        Field::new("cents", DataType::Int64, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(StringArray::from_iter_values(
                ids.clone().map(|i| regions[(i % 3) as usize]),
            )),
            Arc::new(Int64Array::from_iter_values(ids.map(|i| i * 7 % 100))),
        ],
    )
    .unwrap()
}

async fn write(url: &Url, batch: RecordBatch, mode: SaveMode) -> DeltaTable {
    DeltaTable::try_from_url(url.clone())
        .await
        .unwrap()
        .write(vec![batch])
        .with_save_mode(mode)
        .with_partition_columns(["region"])
        .await
        .unwrap()
}

/// `region, count, sum(cents)` of the ids `ranges` hold, as the engine renders them.
fn expected(ranges: &[std::ops::Range<i64>]) -> Vec<Vec<String>> {
    let mut by_region: std::collections::BTreeMap<&str, (i64, i64)> = Default::default();
    let regions = ["eu", "us", "apac"];
    for id in ranges.iter().flat_map(|r| r.clone()) {
        let e = by_region.entry(regions[(id % 3) as usize]).or_default();
        e.0 += 1;
        e.1 += id * 7 % 100;
    }
    by_region
        .into_iter()
        .map(|(r, (n, s))| vec![r.to_string(), n.to_string(), s.to_string()])
        .collect()
}

const QUERY: &str = "SELECT region, count(*), sum(cents) FROM {t} GROUP BY region ORDER BY region";

fn q(table: &str) -> String {
    QUERY.replace("{t}", table)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_tables_written_by_the_rust_writer_are_read_at_their_catalogued_version() {
    let env = Env::new().await;
    let lake = env.lake();
    let path = lake.join("orders");
    std::fs::create_dir_all(&path).unwrap();
    let url = Url::from_directory_path(&path).unwrap();
    write(&url, orders(0..300), SaveMode::Append).await; // version 0
    write(&url, orders(300..450), SaveMode::Append).await; // version 1
    write(&url, orders(1000..1100), SaveMode::Overwrite).await; // version 2

    let summary = env.crawl(&lake).await;
    assert_eq!(summary.tables_created, vec!["default.orders"]);
    assert!(summary.problems.is_empty(), "{:?}", summary.problems);
    assert_eq!(
        summary.footers_read, 0,
        "a Delta table is read from its log"
    );
    let table = env
        .catalog
        .table("default", "orders")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(table.format, tarn_lake::catalog::TableFormat::Delta);

    assert_eq!(env.rows(&q("orders")).await, expected(&[1000..1100]));
    assert_eq!(
        env.rows(&q("orders VERSION AS OF 1")).await,
        expected(&[0..450])
    );
    assert_eq!(
        env.rows(&q("orders VERSION AS OF 0")).await,
        expected(&[0..300])
    );
    // Partition columns are plain strings, and filters on them prune.
    assert_eq!(
        env.rows(
            "SELECT arrow_typeof(region), count(*) FROM orders WHERE region = 'eu' GROUP BY 1"
        )
        .await,
        vec![vec![
            "Utf8".to_string(),
            (1000..1100).filter(|i| i % 3 == 0).count().to_string()
        ]]
    );
    // A limit over partition columns alone is honoured.
    assert_eq!(env.rows("SELECT region FROM orders LIMIT 2").await.len(), 2);

    // A checkpoint, then more commits: the crawl takes the newest version; an unchanged
    // log costs a listing only.
    let table = write(&url, orders(2000..2010), SaveMode::Append).await; // version 3
    deltalake::checkpoints::create_checkpoint(&table, None)
        .await
        .unwrap();
    write(&url, orders(3000..3020), SaveMode::Append).await; // version 4
    assert_eq!(
        env.rows(&q("orders")).await,
        expected(&[1000..1100]),
        "until it is crawled again, the catalogued version answers"
    );
    let again = env.crawl(&lake).await;
    assert_eq!(again.tables_updated, vec!["default.orders"]);
    assert_eq!(
        env.rows(&q("orders")).await,
        expected(&[1000..1100, 2000..2010, 3000..3020])
    );
    let unchanged = env.crawl(&lake).await;
    assert_eq!(unchanged.tables_unchanged, vec!["default.orders"]);

    // MSCK REPAIR moves a Delta table to its newest version too.
    write(&url, orders(4000..4003), SaveMode::Append).await; // version 5
    env.engine.query("MSCK REPAIR TABLE orders").await.unwrap();
    assert_eq!(
        env.rows("SELECT count(*) FROM orders").await,
        vec![vec!["133".to_string()]]
    );
    assert_eq!(
        env.rows("SELECT count(*) FROM orders VERSION AS OF 3")
            .await,
        vec![vec!["110".to_string()]]
    );

    // Partitions come from the log.
    // Its folder gone, the table answers empty (marked deprecated); back, it answers again.
    let away = env.dir.path().join("orders-away");
    std::fs::rename(&path, &away).unwrap();
    let gone = env.crawl(&lake).await;
    assert_eq!(gone.tables_deprecated, vec!["default.orders"], "{gone}");
    assert_eq!(
        env.rows("SELECT count(*) FROM orders").await,
        vec![vec!["0".to_string()]]
    );
    std::fs::rename(&away, &path).unwrap();
    let back = env.crawl(&lake).await;
    assert_eq!(back.tables_updated, vec!["default.orders"], "{back}");
    assert_eq!(
        env.rows("SELECT count(*) FROM orders").await,
        vec![vec!["133".to_string()]]
    );

    let create = format!(
        "CREATE EXTERNAL TABLE o2 (id BIGINT) STORED AS DELTA LOCATION '{}'",
        path.display()
    );
    for (sql, expected) in [
        (
            "ALTER TABLE orders ADD PARTITION (region = 'mars')",
            "is a Delta table",
        ),
        (create.as_str(), "come from its log"),
        (
            "CREATE MATERIALIZED VIEW by_region AS SELECT region, count(*) AS n FROM orders \
             GROUP BY region",
            "is a Delta table",
        ),
        ("SELECT * FROM orders VERSION AS OF 42", "has no version 42"),
    ] {
        let err = env.engine.query(sql).await.unwrap_err().to_string();
        assert!(err.contains(expected), "{sql}: {err}");
    }
}
