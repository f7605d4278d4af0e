//! Crawling fixture lakes into the catalog, and re-crawling them.

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::physical_plan::displayable;
use std::sync::Arc;

use tarn_lake::crawler::{CrawlOptions, Crawler};

use crate::common::{Env, events_v1, events_v2, firehose_lake, write_bytes, write_parquet};

#[tokio::test]
async fn crawl_finds_tables_partitions_and_merged_schema_and_names_the_corrupt_file() {
    let env = Env::new().await;
    let lake = env.lake();
    firehose_lake(&lake);
    let summary = env.crawl(&lake).await;

    assert_eq!(
        summary.tables_created,
        vec!["default.events", "default.users"]
    );
    assert_eq!(summary.files_added, 4, "{summary}");
    assert_eq!(
        summary.partitions_added, 4,
        "3 event partitions + the users root: {summary}"
    );
    assert_eq!(
        summary.skipped.hidden, 3,
        "_SUCCESS, .crc, _temporary: {summary}"
    );
    assert_eq!(summary.skipped.in_progress, 1, "{summary}");
    assert_eq!(summary.skipped.empty, 1, "{summary}");
    assert_eq!(summary.problems.len(), 1, "{summary}");
    assert!(
        summary.problems[0]
            .path
            .ends_with("hour=00/corrupt.parquet"),
        "{summary}"
    );
    assert!(summary.to_string().contains("corrupt.parquet"));

    let events = env
        .catalog
        .table("default", "events")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        env.partition_types("events").await,
        vec!["year int64", "month int64", "day int64", "hour int64"]
    );
    let schema = events.table_schema();
    let field = |n: &str| schema.field_with_name(n).unwrap().clone();
    assert_eq!(
        field("ts").data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, None)
    );
    assert_eq!(
        field("user_id").data_type(),
        &DataType::Int64,
        "int32 widened to int64"
    );
    assert_eq!(
        field("value").data_type(),
        &DataType::Float64,
        "float32 widened to float64"
    );
    assert!(
        field("country").is_nullable(),
        "missing from the first files, so nullable"
    );
    assert_eq!(field("year").data_type(), &DataType::Int64);

    // Every good row is there, old files read through the merged schema.
    assert_eq!(
        env.rows("SELECT count(*), sum(value) FROM events").await,
        vec![vec!["9", "44.75"]]
    );
    assert_eq!(
        env.rows("SELECT count(*) FROM events WHERE country IS NULL")
            .await,
        vec![vec!["6"]],
        "5 rows from files without the column, 1 real NULL"
    );
    assert_eq!(
        env.rows("SELECT arrow_typeof(user_id), arrow_typeof(value) FROM events LIMIT 1")
            .await,
        vec![vec!["Int64", "Float64"]]
    );
}

#[tokio::test]
async fn recrawl_reads_only_what_changed() {
    let env = Env::new().await;
    let lake = env.lake();
    firehose_lake(&lake);
    let first = env.crawl(&lake).await;
    let events = env
        .catalog
        .table("default", "events")
        .await
        .unwrap()
        .unwrap();

    let again = env.crawl(&lake).await;
    assert_eq!(
        again.footers_read, 1,
        "only the corrupt file is retried: {again}"
    );
    assert_eq!(again.files_unchanged, first.files_added, "{again}");
    assert!(
        again.tables_created.is_empty() && again.tables_updated.is_empty(),
        "{again}"
    );
    assert_eq!(again.schema_versions_added, 0);
    let same = env
        .catalog
        .table("default", "events")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(same.schema_version, events.schema_version);
    assert_eq!(
        same.version, events.version,
        "nothing changed, so no new table version"
    );

    // A new hour lands, an old one is deleted.
    write_parquet(
        &lake.join("events/year=2024/month=01/day=06/hour=01/part-0.parquet"),
        &events_v2(
            &["2024-01-06 01:00:00"],
            &[5],
            &["view"],
            &[7.0],
            &[Some("JP")],
        ),
    );
    std::fs::remove_dir_all(lake.join("events/year=2024/month=01/day=05/hour=14")).unwrap();
    let third = env.crawl(&lake).await;
    assert_eq!(
        third.footers_read, 2,
        "the new file and the corrupt one: {third}"
    );
    assert_eq!(third.files_added, 1, "{third}");
    assert_eq!(third.files_removed, 1, "{third}");
    assert_eq!(third.partitions_added, 1, "{third}");
    assert_eq!(third.partitions_removed, 1, "{third}");
    assert_eq!(third.schema_versions_added, 0, "same columns: {third}");
    assert_eq!(third.tables_updated, vec!["default.events"]);
    assert_eq!(
        env.rows("SELECT count(*) FROM events").await,
        vec![vec!["8"]]
    );

    // A new column arrives: a new schema version, older files read it as NULL.
    write_parquet(
        &lake.join("events/year=2024/month=01/day=06/hour=02/part-0.parquet"),
        &{
            let b = events_v1(&["2024-01-06 02:00:00"], &[1], &["view"], &[1.0]);
            let mut fields = b.schema().fields().to_vec();
            fields.push(std::sync::Arc::new(arrow::datatypes::Field::new(
                "device",
                DataType::Utf8,
                true,
            )));
            let mut cols = b.columns().to_vec();
            cols.push(std::sync::Arc::new(arrow::array::StringArray::from(vec![
                "ios",
            ])));
            arrow::array::RecordBatch::try_new(
                std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
                cols,
            )
            .unwrap()
        },
    );
    let fourth = env.crawl(&lake).await;
    assert_eq!(fourth.schema_versions_added, 1, "{fourth}");
    let history = env.catalog.schema_history(events.id).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(
        env.rows("SELECT device, count(*) FROM events GROUP BY device ORDER BY device")
            .await,
        vec![vec!["ios", "1"], vec!["NULL", "8"]]
    );

    // The schema history and the crawl history are queryable.
    let history = env.rows("SHOW HISTORY events").await;
    assert_eq!(
        history.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(),
        vec!["1", "2"]
    );
    assert!(history[1][2].contains("device"), "{history:?}");
    let crawls = env.rows("SHOW CRAWLS").await;
    assert_eq!(crawls.len(), 4, "{crawls:?}");
    // Newest first: the fourth crawl added one file; the third added one and removed one.
    assert_eq!(&crawls[0][3], "succeeded");
    assert_eq!(
        (&crawls[0][6][..], &crawls[1][6][..], &crawls[1][7][..]),
        ("1", "1", "1")
    );
    assert_eq!(
        &crawls[3][8], "1",
        "the corrupt file is a problem in every crawl"
    );
}

#[tokio::test]
async fn strings_are_counted_and_files_of_older_statistics_are_read_again() {
    let env = Env::new().await;
    let lake = env.lake();
    firehose_lake(&lake);
    let first = env.crawl(&lake).await;
    let events = env
        .catalog
        .table("default", "events")
        .await
        .unwrap()
        .unwrap();
    let kinds = || async {
        let files = env.catalog.files(events.id).await.unwrap();
        let counts: Vec<Option<u64>> = files
            .iter()
            .map(|f| f.stats.get("kind").and_then(|s| s.distinct))
            .collect();
        (counts, files.iter().map(|f| f.stats_version).max())
    };
    let (counts, version) = kinds().await;
    // Each file's distinct kinds, counted from its dictionary page: "click" and "view"
    // in the first hour, "view" and "buy" in the second.
    assert!(counts.len() > 2, "{counts:?}");
    assert_eq!(&counts[..2], [Some(2), Some(2)], "{counts:?}");
    assert_eq!(version, Some(tarn_lake::catalog::STATS_VERSION));
    let table_kinds = env.rows("SELECT count(DISTINCT kind) FROM events").await;

    // A catalog written by a build that did not count: its Parquet files are read again
    // on the next crawl, and only on that one.
    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        env.dir.path().join("data/catalog.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("UPDATE data_files SET stats_version = 0, stats = '{}'")
        .execute(&pool)
        .await
        .unwrap();
    // One file cannot be read again (its bytes changed, its size and time did not): its
    // entry stays as it was, not dropped.
    let damaged = lake.join("events/year=2024/month=01/day=05/hour=14/part-0.parquet");
    let modified = std::fs::metadata(&damaged).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&damaged).unwrap();
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(b"XXXX");
    std::fs::write(&damaged, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&damaged)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    let again = env.crawl(&lake).await;
    assert_eq!(again.footers_read, first.footers_read, "{again}");
    assert_eq!(again.files_restated, first.files_added - 1, "{again}");
    assert_eq!(again.files_unchanged, 1, "{again}");
    assert_eq!((again.files_changed, again.bytes_added), (0, 0), "{again}");
    assert!(
        again
            .to_string()
            .contains("read again for newer statistics")
    );
    let (recounted, _) = kinds().await;
    assert_eq!(recounted.len(), counts.len());
    assert_eq!(recounted[0], counts[0]);
    // The damaged file kept its old entry, without counts.
    assert_eq!(recounted[1], None);
    std::fs::write(&damaged, {
        bytes[n - 4..].copy_from_slice(b"PAR1");
        &bytes
    })
    .unwrap();
    // Repaired (and so changed), it is read again; nothing else is.
    let third = env.crawl(&lake).await;
    assert_eq!(
        third.footers_read, 2,
        "the repaired file and the corrupt one: {third}"
    );
    assert_eq!(kinds().await, (counts, version));
    let fourth = env.crawl(&lake).await;
    assert_eq!(fourth.footers_read, 1, "only the corrupt file: {fourth}");
    assert_eq!(
        env.rows("SELECT count(DISTINCT kind) FROM events").await,
        table_kinds
    );
}

#[tokio::test]
async fn a_type_conflict_is_reported_naming_both_files_and_the_file_is_left_out() {
    let env = Env::new().await;
    let lake = env.lake();
    write_parquet(
        &lake.join("t/part-0.parquet"),
        &events_v1(&["2024-01-01 00:00:00"], &[1], &["a"], &[1.0]),
    );
    // `kind` as an integer cannot merge with the string column.
    let bad = {
        let schema = arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
            "kind",
            DataType::Int64,
            false,
        )]);
        arrow::array::RecordBatch::try_new(
            std::sync::Arc::new(schema),
            vec![std::sync::Arc::new(arrow::array::Int64Array::from(vec![7]))],
        )
        .unwrap()
    };
    write_parquet(&lake.join("t/part-1.parquet"), &bad);
    let summary = env.crawl(&lake).await;
    assert_eq!(summary.problems.len(), 1, "{summary}");
    let problem = &summary.problems[0];
    assert!(problem.path.ends_with("part-1.parquet"), "{summary}");
    assert!(
        problem.message.contains("kind"),
        "names the column: {}",
        problem.message
    );
    assert!(
        problem.message.contains("part-0.parquet"),
        "names the other file: {}",
        problem.message
    );
    assert_eq!(env.rows("SELECT count(*) FROM t").await, vec![vec!["1"]]);
}

#[tokio::test]
async fn partition_filters_prune_files_before_they_are_opened() {
    let env = Env::new().await;
    let lake = env.lake();
    firehose_lake(&lake);
    env.crawl(&lake).await;

    let files_scanned = |sql: &'static str| {
        let engine = env.engine.clone();
        async move {
            let df = engine.plan(sql, None).await.unwrap();
            let plan = df.create_physical_plan().await.unwrap();
            let text = displayable(plan.as_ref()).indent(true).to_string();
            text.matches(".parquet").count()
        }
    };
    assert_eq!(files_scanned("SELECT * FROM events").await, 3);
    assert_eq!(files_scanned("SELECT * FROM events WHERE day = 5").await, 2);
    assert_eq!(
        files_scanned("SELECT * FROM events WHERE day = 5 AND hour = 14").await,
        1
    );
    assert_eq!(
        files_scanned("SELECT * FROM events WHERE hour > 20").await,
        0
    );
    assert_eq!(
        env.rows("SELECT count(*) FROM events WHERE day = 5 AND hour = 14")
            .await,
        vec![vec!["2"]]
    );
}

#[tokio::test]
async fn queries_read_the_catalog_not_the_store() {
    let env = Env::new().await;
    let lake = env.lake();
    firehose_lake(&lake);
    env.crawl(&lake).await;
    // A file that lands after the crawl is invisible until the next crawl: queries plan
    // from the catalog's file list and never list the store.
    write_parquet(
        &lake.join("events/year=2024/month=01/day=05/hour=13/part-1.parquet"),
        &events_v1(&["2024-01-05 13:30:00"], &[9], &["view"], &[1.0]),
    );
    assert_eq!(
        env.rows("SELECT count(*) FROM events").await,
        vec![vec!["9"]]
    );
    env.crawl(&lake).await;
    assert_eq!(
        env.rows("SELECT count(*) FROM events").await,
        vec![vec!["10"]]
    );
}

#[tokio::test]
async fn damaged_table_properties_are_an_error_naming_the_table_not_an_empty_layout() {
    let env = Env::new().await;
    let lake = env.lake();
    firehose_lake(&lake);
    // A pinned partition, as DDL writes it.
    env.crawl_with(
        &lake.join("events"),
        CrawlOptions::table("default", "events"),
    )
    .await;
    env.engine
        .query(&format!(
            "ALTER TABLE events ADD PARTITION (year='2030', month='01', day='01', hour='00') \
             LOCATION '{}'",
            lake.join("events/year=2024/month=01/day=05/hour=13")
                .display()
        ))
        .await
        .unwrap();
    let table = env
        .catalog
        .table("default", "events")
        .await
        .unwrap()
        .unwrap();
    let kept = env.catalog.table_properties(table.id).await.unwrap();
    assert_eq!(kept.pinned_partitions.len(), 1, "{kept:?}");

    // Hand-edited (or written by a broken build): the pins are no longer a list.
    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        env.dir.path().join("data/catalog.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("UPDATE tables SET properties = json_set(properties, '$.partition_locations', 7)")
        .execute(&pool)
        .await
        .unwrap();
    let error = Crawler::new(env.catalog.clone(), Arc::clone(&env.stores))
        .crawl(
            &lake.join("events").to_string_lossy(),
            &CrawlOptions::table("default", "events"),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("damaged") && error.contains("default.events"),
        "{error}"
    );
    // Nothing was changed: the table still has its files.
    let files = env.catalog.files(table.id).await.unwrap();
    assert!(!files.is_empty());
}

#[tokio::test]
async fn named_table_and_database_options_and_bad_locations() {
    let env = Env::new().await;
    let lake = env.lake();
    firehose_lake(&lake);
    let options = CrawlOptions::table("web", "clicks");
    env.crawl_with(&lake.join("events"), options).await;
    assert_eq!(
        env.rows("SELECT count(*) FROM web.clicks").await,
        vec![vec!["9"]]
    );

    let crawler = tarn_lake::crawler::Crawler::new(env.catalog.clone(), env.stores.clone());
    let err = crawler
        .crawl(
            &env.dir.path().join("nope").to_string_lossy(),
            &CrawlOptions::default(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "names the path: {err}");
    let err = crawler
        .crawl("ftp://host/x", &CrawlOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("ftp"), "names the scheme: {err}");
}

#[tokio::test]
async fn catalog_survives_reopen() {
    let env = Env::new().await;
    let lake = env.lake();
    firehose_lake(&lake);
    env.crawl(&lake).await;
    let Env { dir, .. } = env;
    let reopened = Env::open(dir).await;
    assert_eq!(
        reopened.rows("SELECT count(*) FROM events").await,
        vec![vec!["9"]]
    );
    write_bytes(&reopened.lake().join("notes/README.txt"), b"not data");
    let summary = reopened.crawl(&reopened.lake()).await;
    assert_eq!(summary.skipped.not_parquet, 1, "{summary}");
}

#[tokio::test]
async fn date_and_string_partitions_are_typed_and_prune_with_nulls() {
    let env = Env::new().await;
    let lake = env.lake();
    let file = |dt: &str, region: &str, ts: &str, user: i32| {
        write_parquet(
            &lake.join(format!("daily/dt={dt}/region={region}/part-0.parquet")),
            &events_v1(&[ts], &[user], &["view"], &[1.0]),
        );
    };
    file("2024-01-05", "eu%2Dwest", "2024-01-05 10:00:00", 1);
    file(
        "2024-01-05",
        "__HIVE_DEFAULT_PARTITION__",
        "2024-01-05 11:00:00",
        2,
    );
    file("2024-01-06", "us", "2024-01-06 10:00:00", 3);
    // A name that needs escaping in a URL.
    write_parquet(
        &lake.join("daily/dt=2024-01-06/region=us/part 1 (copy).parquet"),
        &events_v1(&["2024-01-06 12:00:00"], &[4], &["view"], &[1.0]),
    );
    let summary = env.crawl(&lake).await;
    assert_eq!(summary.tables_created, vec!["default.daily"], "{summary}");

    assert_eq!(
        env.partition_types("daily").await,
        vec!["dt date", "region string"]
    );
    assert_eq!(
        env.rows("SELECT arrow_typeof(dt), arrow_typeof(region) FROM daily LIMIT 1")
            .await,
        vec![vec!["Date32", "Utf8"]]
    );
    assert_eq!(
        env.rows("SELECT user_id FROM daily WHERE dt = DATE '2024-01-05' AND region IS NULL")
            .await,
        vec![vec!["2"]],
        "__HIVE_DEFAULT_PARTITION__ is NULL"
    );
    assert_eq!(
        env.rows("SELECT region FROM daily WHERE dt = '2024-01-05' AND region IS NOT NULL")
            .await,
        vec![vec!["eu-west"]],
        "partition values are percent-decoded"
    );
    assert_eq!(
        env.rows("SELECT count(*) FROM daily WHERE dt > DATE '2024-01-05'")
            .await,
        vec![vec!["2"]]
    );
}

#[tokio::test]
async fn delta_and_iceberg_folders_are_not_crawled_as_loose_parquet() {
    let env = Env::new().await;
    let lake = env.lake();
    firehose_lake(&lake);
    let parquet = |p: &str| {
        write_parquet(
            &lake.join(p),
            &events_v1(&["2024-01-01 00:00:00"], &[1], &["a"], &[1.0]),
        )
    };
    parquet("sales/part-0.parquet");
    parquet("sales/part-1-removed-by-a-later-commit.parquet");
    write_bytes(
        &lake.join("sales/_delta_log/00000000000000000000.json"),
        b"{}",
    );
    parquet("ice/data/00000-0.parquet");
    write_bytes(&lake.join("ice/metadata/v1.metadata.json"), b"{}");
    // An empty log is not a Delta table: this folder is crawled as Parquet.
    parquet("loose/part-0.parquet");
    write_bytes(&lake.join("loose/_delta_log/.keep"), b"x");

    let summary = env.crawl(&lake).await;
    assert_eq!(
        summary.tables_created,
        vec!["default.events", "default.loose", "default.users"]
    );
    assert_eq!(summary.skipped.other_format, 5, "{summary}");
    let problem = |folder: &str| {
        summary
            .problems
            .iter()
            .find(|p| p.path.ends_with(&format!("/lake/{folder}/")))
            .map(|p| p.message.clone())
            .unwrap_or_default()
    };
    // A Delta log is read as the table's truth: this one has no metadata, which is said.
    assert!(
        problem("sales").contains("reading the Delta log")
            && problem("sales").contains("No table metadata"),
        "{summary}"
    );
    assert!(
        problem("ice").contains("does not read Iceberg tables"),
        "{summary}"
    );
}

#[tokio::test]
async fn include_exclude_and_max_tables() {
    let env = Env::new().await;
    let lake = env.lake();
    firehose_lake(&lake);

    // Too many new tables: refused before anything is written.
    let err = tarn_lake::crawler::Crawler::new(env.catalog.clone(), env.stores.clone())
        .crawl(
            &lake.to_string_lossy(),
            &CrawlOptions {
                shape: tarn_lake::catalog::CrawlerOptions {
                    max_tables: Some(1),
                    ..Default::default()
                },
                ..CrawlOptions::default()
            },
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("would create 2 tables"), "{err}");
    assert!(
        env.catalog.tables().await.unwrap().is_empty(),
        "nothing was committed"
    );

    let options = CrawlOptions {
        shape: tarn_lake::catalog::CrawlerOptions {
            include: vec!["events/**".into()],
            exclude: vec!["**/hour=14/**".into()],
            ..Default::default()
        },
        ..CrawlOptions::default()
    };
    let summary = env.crawl_with(&lake, options).await;
    assert_eq!(summary.tables_created, vec!["default.events"], "{summary}");
    assert!(summary.skipped.excluded >= 2, "{summary}");
    assert_eq!(
        env.rows("SELECT count(*) FROM events").await,
        vec![vec!["7"]]
    );

    let bad = tarn_lake::crawler::Crawler::new(env.catalog.clone(), env.stores.clone())
        .crawl(
            &lake.to_string_lossy(),
            &CrawlOptions {
                shape: tarn_lake::catalog::CrawlerOptions {
                    include: vec!["[".into()],
                    ..Default::default()
                },
                ..CrawlOptions::default()
            },
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(bad.contains("bad glob pattern '['"), "{bad}");
}

#[tokio::test]
async fn repair_of_an_emptied_folder_and_nested_tables_survive_a_parent_crawl() {
    let env = Env::new().await;
    let lake = env.lake();
    firehose_lake(&lake);
    let hour13 = lake.join("events/year=2024/month=01/day=05/hour=13");
    env.engine
        .query(&format!(
            "CREATE EXTERNAL TABLE h13 STORED AS PARQUET LOCATION '{}'",
            hour13.display()
        ))
        .await
        .unwrap();
    assert_eq!(env.rows("SELECT count(*) FROM h13").await, vec![vec!["3"]]);

    // Crawling the parent folder keeps the table declared inside another table's tree.
    env.crawl(&lake).await;
    assert_eq!(env.rows("SELECT count(*) FROM h13").await, vec![vec!["3"]]);
    assert_eq!(
        env.rows("SELECT count(*) FROM events").await,
        vec![vec!["9"]]
    );

    // Emptied folder: the repair forgets its files instead of keeping dead entries.
    std::fs::remove_file(hour13.join("part-0.parquet")).unwrap();
    env.engine.query("MSCK REPAIR TABLE h13").await.unwrap();
    assert_eq!(env.rows("SELECT count(*) FROM h13").await, vec![vec!["0"]]);
}

#[tokio::test]
async fn progress_is_reported_as_the_crawl_advances() {
    let env = Env::new().await;
    let lake = env.lake();
    firehose_lake(&lake);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let summary = tarn_lake::crawler::Crawler::new(env.catalog.clone(), env.stores.clone())
        .with_progress(move |p| sink.lock().unwrap().push(*p))
        .crawl(&lake.to_string_lossy(), &CrawlOptions::default())
        .await
        .unwrap();
    let seen = seen.lock().unwrap();
    let last = seen.last().expect("progress was reported");
    assert_eq!(last.files_listed, summary.files_listed);
    assert_eq!(last.footers_read, summary.footers_read);
    assert_eq!(last.footers_to_read, summary.footers_read);
    assert!(last.bytes > 0);
    assert!(
        seen.windows(2)
            .all(|w| w[0].footers_read <= w[1].footers_read),
        "monotonic"
    );
}

#[tokio::test]
async fn firehose_default_prefixes_become_unnamed_partitions() {
    let env = Env::new().await;
    let lake = env.lake();
    let write = |dir: &str, ts: &str, user: i32| {
        write_parquet(
            &lake.join(format!("stream/{dir}/part-0.parquet")),
            &events_v1(&[ts], &[user], &["view"], &[1.0]),
        )
    };
    write("2024/01/05/13", "2024-01-05 13:00:00", 1);
    write("2024/01/05/14", "2024-01-05 14:00:00", 2);
    write("2024/01/06/00", "2024-01-06 00:00:00", 3);
    let summary = env.crawl(&lake).await;
    assert_eq!(
        summary.tables_created,
        vec!["default.stream"],
        "one table, not one per hour: {summary}"
    );
    assert_eq!(
        env.partition_types("stream").await,
        vec![
            "partition_0 int64",
            "partition_1 int64",
            "partition_2 int64",
            "partition_3 int64"
        ]
    );
    assert_eq!(
        env.rows("SELECT user_id FROM stream WHERE partition_2 = 5 AND partition_3 = 14")
            .await,
        vec![vec!["2"]]
    );
}

#[tokio::test]
async fn scheduled_crawlers_run_when_due_and_are_recorded() {
    use chrono::{DateTime, Utc};
    use tarn_lake::catalog::{CrawlerDef, CrawlerOptions};
    use tarn_lake::crawler::jobs::run_due;
    let env = Env::new().await;
    let lake = env.lake();
    firehose_lake(&lake);
    let at = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc);
    let location = tarn_lake::storage::Location::parse(&lake.to_string_lossy()).unwrap();
    env.catalog
        .create_crawler(&CrawlerDef {
            name: "hourly".into(),
            location: location.to_string(),
            database: "sched".into(),
            options: CrawlerOptions::default(),
            schedule: Some("0 * * * *".into()),
            created_at: "2026-01-01T10:05:00Z".into(),
            last_started_at: None,
        })
        .await
        .unwrap();
    let duplicate = env
        .catalog
        .create_crawler(&env.catalog.crawler("hourly").await.unwrap().unwrap())
        .await
        .unwrap_err();
    assert!(
        duplicate.to_string().contains("already exists"),
        "{duplicate}"
    );

    // Not due before 11:00.
    assert!(
        run_due(&env.catalog, &env.stores, at("2026-01-01T10:59:59Z"))
            .await
            .unwrap()
            .is_empty()
    );
    let ran = run_due(&env.catalog, &env.stores, at("2026-01-01T11:00:00Z"))
        .await
        .unwrap();
    assert_eq!(ran.len(), 1);
    let summary = ran[0].1.as_ref().unwrap();
    assert!(summary.files_added > 0);
    assert!(
        env.catalog
            .table("sched", "events")
            .await
            .unwrap()
            .is_some()
    );
    // It ran at 11:00, so the next run is 12:00.
    assert!(
        run_due(&env.catalog, &env.stores, at("2026-01-01T11:30:00Z"))
            .await
            .unwrap()
            .is_empty()
    );
    let again = run_due(&env.catalog, &env.stores, at("2026-01-01T12:00:00Z"))
        .await
        .unwrap();
    assert_eq!(
        again[0].1.as_ref().unwrap().files_added,
        0,
        "nothing changed"
    );

    let history = env
        .catalog
        .crawl_history_of(Some("hourly"), 10)
        .await
        .unwrap();
    assert_eq!(history.len(), 2);
    assert!(history.iter().all(|c| c.status == "succeeded"));
    // Ad-hoc crawls are not the crawler's.
    env.crawl(&lake).await;
    assert_eq!(
        env.catalog
            .crawl_history_of(Some("hourly"), 10)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(env.catalog.crawl_history(10).await.unwrap().len(), 3);
}

#[tokio::test]
async fn schema_change_policies_update_log_and_fail() {
    use tarn_lake::crawler::SchemaChangePolicy;
    let env = Env::new().await;
    let events = env.lake().join("events");
    let v1 = || events_v1(&["2024-01-05 13:00:00"], &[1], &["click"], &[1.5]);
    write_parquet(&events.join("day=05/part-0.parquet"), &v1());
    env.crawl(&events).await;
    let columns = |env: &Env| {
        let env = env.engine.clone();
        async move {
            let t = env
                .catalog()
                .table("default", "events")
                .await
                .unwrap()
                .unwrap();
            t.file_schema
                .fields()
                .iter()
                .map(|f| format!("{} {}", f.name(), f.data_type()))
                .collect::<Vec<_>>()
        }
    };
    let before = columns(&env).await;
    // A new file brings a new column and wider types.
    write_parquet(
        &events.join("day=06/part-0.parquet"),
        &events_v2(
            &["2024-01-06 00:01:00"],
            &[7],
            &["buy"],
            &[2.5],
            &[Some("NL")],
        ),
    );
    let with = |policy| CrawlOptions {
        shape: tarn_lake::catalog::CrawlerOptions {
            schema_change: policy,
            ..Default::default()
        },
        ..CrawlOptions::default()
    };

    let failed = env
        .crawl_with(&events, with(SchemaChangePolicy::Fail))
        .await;
    let message = &failed.problems[0].message;
    assert!(message.contains("new column country Utf8"), "{message}");
    assert!(
        message.contains("column user_id Int32 -> Int64"),
        "{message}"
    );
    assert!(
        message.contains("nothing of this table was committed"),
        "{message}"
    );
    assert_eq!(columns(&env).await, before);
    assert_eq!(
        env.rows("SELECT count(*) FROM events").await,
        vec![vec!["1"]]
    );

    let logged = env.crawl_with(&events, with(SchemaChangePolicy::Log)).await;
    assert!(logged.problems[0].message.contains("keeps its columns"));
    assert_eq!(columns(&env).await, before, "the schema is kept");
    assert_eq!(
        env.rows("SELECT count(*) FROM events").await,
        vec![vec!["2"]]
    );

    let updated = env
        .crawl_with(&events, with(SchemaChangePolicy::Update))
        .await;
    assert!(updated.problems.is_empty());
    let after = columns(&env).await;
    assert!(after.contains(&"country Utf8".to_string()), "{after:?}");
    assert!(after.contains(&"user_id Int64".to_string()), "{after:?}");
    assert_eq!(
        env.rows("SELECT country FROM events WHERE country IS NOT NULL")
            .await,
        vec![vec!["NL"]]
    );
}

#[tokio::test]
async fn tables_whose_folders_are_gone_are_marked_or_deleted() {
    let env = Env::new().await;
    let lake = env.lake();
    firehose_lake(&lake);
    env.crawl(&lake).await;
    let users = lake.join("users");
    let moved = env.dir.path().join("users-moved");
    std::fs::rename(&users, &moved).unwrap();
    let deprecated = |env: &Env| {
        let env = env.catalog.clone();
        async move {
            let table = env.table("default", "users").await.unwrap().unwrap();
            env.table_properties(table.id).await.unwrap().deprecated
        }
    };

    // mark (the default): kept, without files, deprecated once.
    let summary = env.crawl(&lake).await;
    assert_eq!(
        summary.tables_deprecated,
        vec!["default.users"],
        "{summary}"
    );
    assert!(summary.tables_updated.is_empty(), "{summary}");
    let reason = deprecated(&env).await.unwrap();
    assert!(reason.contains("users/ was gone"), "{reason}");
    assert_eq!(
        env.rows("SELECT count(*) FROM users").await,
        vec![vec!["0"]]
    );
    let again = env.crawl(&lake).await;
    assert!(again.tables_deprecated.is_empty(), "marked once: {again}");

    // The folder is back: the files and the table are too.
    std::fs::rename(&moved, &users).unwrap();
    let back = env.crawl(&lake).await;
    assert_eq!(back.tables_updated, vec!["default.users"], "{back}");
    assert_eq!(deprecated(&env).await, None);
    assert_ne!(
        env.rows("SELECT count(*) FROM users").await,
        vec![vec!["0"]]
    );

    // A folder the crawl filters out is not gone.
    let filtered = env
        .crawl_with(
            &lake,
            CrawlOptions {
                shape: tarn_lake::catalog::CrawlerOptions {
                    exclude: vec!["users/**".into()],
                    deletion: tarn_lake::crawler::DeletionPolicy::Delete,
                    ..Default::default()
                },
                ..CrawlOptions::default()
            },
        )
        .await;
    assert!(filtered.tables_deleted.is_empty(), "{filtered}");

    // delete: dropped from the catalog.
    std::fs::rename(&users, &moved).unwrap();
    let deleted = env
        .crawl_with(
            &lake,
            CrawlOptions {
                shape: tarn_lake::catalog::CrawlerOptions {
                    deletion: tarn_lake::crawler::DeletionPolicy::Delete,
                    ..Default::default()
                },
                ..CrawlOptions::default()
            },
        )
        .await;
    assert_eq!(deleted.tables_deleted, vec!["default.users"], "{deleted}");
    assert!(
        env.catalog
            .table("default", "users")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        env.catalog
            .table("default", "events")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_create_external_table_of_one_name_succeeds_once() {
    let env = Env::new().await;
    let lake = env.lake();
    firehose_lake(&lake);
    for round in 0..5 {
        let sql = format!(
            "CREATE EXTERNAL TABLE ev{round} STORED AS PARQUET LOCATION '{}'",
            lake.join("events").display()
        );
        let (a, b) = tokio::join!(env.engine.query(&sql), env.engine.query(&sql));
        let errors: Vec<String> = [a, b]
            .into_iter()
            .filter_map(|r| r.err().map(|e| e.to_string()))
            .collect();
        assert_eq!(
            errors.len(),
            1,
            "exactly one statement creates ev{round}: {errors:?}"
        );
        assert!(errors[0].contains("already exists"), "{errors:?}");
    }
}
