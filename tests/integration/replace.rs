//! Replacing a table's files (`INSERT OVERWRITE`, ingest in replace mode) keeps the old
//! files readable for queries planned before the swap, and a re-crawl does not bring them
//! back; they are deleted after the grace period.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use futures::TryStreamExt;
use tarn_lake::engine::{Engine, EngineOptions, Statement};

use crate::common::{Env, write_parquet};

fn parquet_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
        .count()
}

#[tokio::test]
async fn a_scan_running_across_an_overwrite_completes_with_the_old_rows() {
    let env = Env::new().await;
    let lake = env.lake();
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    // Eight files of 1,000 rows: v = 0..8,000.
    for file in 0..8i64 {
        let values: ArrayRef =
            Arc::new(Int64Array::from_iter_values(file * 1000..(file + 1) * 1000));
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![values]).unwrap();
        write_parquet(&lake.join(format!("t/part-{file}.parquet")), &batch);
    }
    env.crawl(&lake).await;

    // One partition and small batches: the scan opens the files one after another, so
    // most are opened after the overwrite below.
    let reader = Engine::new(
        env.catalog.clone(),
        Arc::clone(&env.stores),
        &EngineOptions {
            datafusion_config: vec![
                ("execution.target_partitions".into(), "1".into()),
                ("execution.batch_size".into(), "100".into()),
            ],
            ..EngineOptions::default()
        },
    )
    .unwrap();
    let Statement::Query(df) = reader.prepare("SELECT v FROM t", None).await.unwrap() else {
        panic!("a query");
    };
    let mut stream = reader.execute(*df).await.unwrap();
    let first = stream.try_next().await.unwrap().expect("a first batch");
    let mut total: i64 = sum(&first);
    let mut rows = first.num_rows();

    let replaced = env.rows("INSERT OVERWRITE t SELECT 42 AS v").await;
    assert!(!replaced.is_empty());
    assert_eq!(
        env.rows("SELECT count(*), sum(v) FROM t").await,
        vec![vec!["1", "42"]]
    );

    // The scan planned before the overwrite reads the old files to the end.
    while let Some(batch) = stream.try_next().await.unwrap() {
        total += sum(&batch);
        rows += batch.num_rows();
    }
    assert_eq!(rows, 8000);
    assert_eq!(total, (0..8000i64).sum::<i64>());

    // The old files wait for the grace period, and a re-crawl leaves them out.
    let folder = lake.join("t");
    assert_eq!(parquet_files(&folder), 9);
    env.rows("MSCK REPAIR TABLE t").await;
    assert_eq!(
        env.rows("SELECT count(*), sum(v) FROM t").await,
        vec![vec!["1", "42"]]
    );
    let later =
        chrono::Utc::now() + tarn_lake::deferred::DELETE_GRACE + chrono::TimeDelta::seconds(1);
    assert_eq!(env.engine.sweep_deferred_deletes(later).await.unwrap(), 8);
    assert_eq!(parquet_files(&folder), 1);
    env.rows("MSCK REPAIR TABLE t").await;
    assert_eq!(
        env.rows("SELECT count(*), sum(v) FROM t").await,
        vec![vec!["1", "42"]]
    );
}

fn sum(batch: &RecordBatch) -> i64 {
    batch
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .values()
        .iter()
        .sum()
}

/// A crawl takes a catalogued file it did not list for removed only when the file is older
/// than its listing: a file another writer committed while the crawl ran (last modified
/// after the listing began) cannot be in the listing, and stays.
#[tokio::test]
async fn a_crawl_keeps_files_committed_after_its_listing_began() {
    let env = Env::new().await;
    let lake = env.lake();
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    for file in ["a", "b"] {
        let values: ArrayRef = Arc::new(Int64Array::from_iter_values(0..10));
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![values]).unwrap();
        write_parquet(&lake.join(format!("t/{file}.parquet")), &batch);
    }
    env.crawl(&lake).await;
    let table = env.catalog.table("default", "t").await.unwrap().unwrap();
    let catalogued = env.catalog.file_index(table.id).await.unwrap();
    assert_eq!(catalogued.len(), 2);

    // What another writer commits between the next crawl's listing and its commit: a file
    // written after the listing began (dated an hour ahead here, so the listing below
    // cannot have seen it). And b is deleted from the lake.
    let a = catalogued
        .iter()
        .find(|f| f.path.ends_with("/a.parquet"))
        .expect("a is catalogued")
        .clone();
    let mut late = a.clone();
    late.path = late.path.replace("/a.parquet", "/late.parquet");
    late.last_modified = chrono::Utc::now() + chrono::TimeDelta::hours(1);
    env.catalog
        .commit_table(&tarn_lake::catalog::TableCommit {
            database: "default".into(),
            name: "t".into(),
            location: table.location.clone(),
            format: table.format,
            partition_columns: table.partition_columns.clone(),
            file_schema: Arc::clone(&table.file_schema),
            base_schema_version: Some(table.schema_version),
            upserts: vec![late.clone()],
            removals: vec![],
            declared: None,
            format_state: None,
            create_only: false,
            one_file_per_partition: false,
            removals_read: false,
            from_listing: false,
            stream_flushed: None,
        })
        .await
        .unwrap();
    std::fs::remove_file(lake.join("t/b.parquet")).unwrap();

    let summary = env.crawl(&lake).await;
    assert_eq!(summary.files_removed, 1);
    let mut paths: Vec<String> = env
        .catalog
        .file_index(table.id)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .collect();
    paths.sort();
    assert_eq!(paths, [a.path, late.path]);
}
