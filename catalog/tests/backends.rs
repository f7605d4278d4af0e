//! The catalog's suite, run on both backends: SQLite (the embedded default) and a real
//! PostgreSQL server started for the test; and front ends sharing one PostgreSQL catalog,
//! committing to one table at once, losing nothing.

mod postgres;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use chrono::{TimeZone, Utc};
use tarn_catalog::model::*;
use tarn_catalog::{Backend, Catalog};

fn schema(columns: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, t)| Field::new(*n, t.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

fn file(path: &str, day: &str, rows: u64, schema: &SchemaRef) -> FileEntry {
    FileEntry {
        path: path.to_owned(),
        size: rows * 10,
        e_tag: Some(format!("etag-{path}")),
        last_modified: Utc.with_ymd_and_hms(2024, 1, 5, 13, 0, 0).unwrap(),
        row_count: rows,
        footer_size: Some(100),
        file_schema: Arc::clone(schema),
        stats: BTreeMap::new(),
        stats_version: 1,
        partition_values: vec![Some(day.to_owned())],
        partition_location: format!("events/day={day}/"),
    }
}

fn commit(
    table: &str,
    schema: &SchemaRef,
    upserts: Vec<FileEntry>,
    removals: Vec<String>,
) -> TableCommit {
    TableCommit {
        database: "default".into(),
        name: table.into(),
        location: format!("file:///lake/{table}/"),
        format: TableFormat::Parquet,
        partition_columns: vec![PartitionColumn {
            name: "day".into(),
            data_type: PartitionType::String,
        }],
        file_schema: Arc::clone(schema),
        base_schema_version: None,
        upserts,
        removals,
        declared: None,
        format_state: None,
        create_only: false,
        one_file_per_partition: false,
        removals_read: false,
        from_listing: false,
        stream_flushed: None,
    }
}

/// Every kind of catalog object through the public API, with what each read gives back.
async fn suite(catalog: &Catalog) {
    let table_id = tables_and_files(catalog).await;
    properties_partitions_databases_views(catalog, table_id).await;
    crawls_history_and_deletes(catalog).await;
    rewrites_and_listings(catalog).await;
    // The catalog's own invariants hold after all of it.
    assert_eq!(catalog.check().await.unwrap(), Vec::<String>::new());
    assert!(catalog.drop_table("default", "events").await.unwrap());
    assert!(catalog.tables().await.unwrap().is_empty());
}

/// Commits that create a table, add, replace and remove files, widen its schema; returns
/// the table's id.
async fn tables_and_files(catalog: &Catalog) -> i64 {
    let v1 = schema(&[("id", DataType::Int64), ("name", DataType::Utf8)]);
    let before = catalog.generation().await.unwrap();

    // A new table: one schema version, two partitions, three files.
    let first = commit(
        "events",
        &v1,
        vec![
            file("events/day=1/a.parquet", "1", 10, &v1),
            file("events/day=1/b.parquet", "1", 20, &v1),
            file("events/day=2/c.parquet", "2", 30, &v1),
        ],
        vec![],
    );
    let outcome = catalog.commit_table(&first).await.unwrap();
    assert!(outcome.created && outcome.changed);
    assert_eq!(outcome.partitions_added, 2);
    assert!(catalog.generation().await.unwrap() > before);
    let table = catalog.table("default", "events").await.unwrap().unwrap();
    // A new table's commit is its first change.
    assert_eq!((table.version, table.schema_version), (2, 1));
    assert_eq!(table.file_schema, v1);
    let partitions = catalog.partitions(table.id).await.unwrap();
    let counts: Vec<(String, i64, i64, i64)> = partitions
        .iter()
        .map(|p| (p.location.clone(), p.file_count, p.row_count, p.total_bytes))
        .collect();
    assert_eq!(
        counts,
        vec![
            ("events/day=1/".into(), 2, 30, 300),
            ("events/day=2/".into(), 1, 30, 300)
        ]
    );
    let files = catalog.files(table.id).await.unwrap();
    assert_eq!(files.len(), 3);
    assert_eq!(
        files[0].e_tag.as_deref(),
        Some("etag-events/day=1/a.parquet")
    );
    assert_eq!(files[2].partition_values, vec![Some("2".to_owned())]);
    let sizes = catalog.table_sizes().await.unwrap();
    let size = sizes[&table.id];
    assert_eq!(
        (size.files, size.rows, size.bytes, size.partitions),
        (3, 60, 600, 2)
    );

    // The same files committed again replace their rows: nothing doubles.
    let again = catalog.commit_table(&first).await.unwrap();
    assert!(!again.created && again.partitions_added == 0);
    assert_eq!(catalog.files(table.id).await.unwrap().len(), 3);
    let sizes = catalog.table_sizes().await.unwrap();
    assert_eq!(sizes[&table.id].rows, 60);

    // A widened schema, a removal that empties a partition, a file in a new one.
    let v2 = schema(&[
        ("id", DataType::Int64),
        ("name", DataType::Utf8),
        ("score", DataType::Float64),
    ]);
    let second = commit(
        "events",
        &v2,
        vec![file("events/day=3/d.parquet", "3", 5, &v2)],
        vec!["events/day=2/c.parquet".into()],
    );
    let outcome = catalog.commit_table(&second).await.unwrap();
    assert!(outcome.new_schema_version);
    assert_eq!(
        (outcome.partitions_added, outcome.partitions_removed),
        (1, 1)
    );
    let table = catalog.table("default", "events").await.unwrap().unwrap();
    assert_eq!((table.version, table.schema_version), (4, 2));
    assert_eq!(catalog.schema_history(table.id).await.unwrap().len(), 2);
    let index = catalog.file_index(table.id).await.unwrap();
    let paths: Vec<&str> = index.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "events/day=1/a.parquet",
            "events/day=1/b.parquet",
            "events/day=3/d.parquet"
        ]
    );
    assert_eq!(index[2].file_schema, v2);

    // A writer that merged its column onto schema version 1, while another writer made
    // version 2, is refused with nothing applied (its merge would drop `score`); one whose
    // schema is the table's goes through.
    let stale_schema = schema(&[
        ("id", DataType::Int64),
        ("name", DataType::Utf8),
        ("tag", DataType::Utf8),
    ]);
    let mut stale = commit(
        "events",
        &stale_schema,
        vec![file("events/day=4/e.parquet", "4", 1, &stale_schema)],
        vec![],
    );
    stale.base_schema_version = Some(1);
    let refused = catalog.commit_table(&stale).await.unwrap_err();
    assert!(
        matches!(&refused, tarn_catalog::Error::SchemaMoved(m) if m.contains("default.events")),
        "{refused}"
    );
    let after = catalog.table("default", "events").await.unwrap().unwrap();
    assert_eq!((after.version, after.schema_version), (4, 2));
    assert_eq!(catalog.files(table.id).await.unwrap().len(), 3);
    let mut same = commit("events", &v2, vec![], vec![]);
    same.base_schema_version = Some(1);
    assert!(!catalog.commit_table(&same).await.unwrap().changed);
    table.id
}

/// A rewrite (a compaction) whose files another writer removed first is refused with
/// nothing applied; a listing's commit (a crawl) leaves out files replaced since it listed.
async fn rewrites_and_listings(catalog: &Catalog) {
    let s = schema(&[("id", DataType::Int64)]);
    let path = |name: &str| format!("logs/day=1/{name}.parquet");
    let small = |name: &str| file(&path(name), "1", 1, &s);
    let paths = || async {
        let table = catalog.table("default", "logs").await.unwrap().unwrap();
        let index = catalog.file_index(table.id).await.unwrap();
        index.into_iter().map(|f| f.path).collect::<Vec<_>>()
    };
    let files = vec![small("a"), small("b"), small("c")];
    catalog
        .commit_table(&commit("logs", &s, files, vec![]))
        .await
        .unwrap();

    // Two compactions read a and b; the first swaps them for ab, the second is refused.
    let mut first = commit("logs", &s, vec![small("ab")], vec![path("a"), path("b")]);
    first.removals_read = true;
    catalog.commit_table(&first).await.unwrap();
    let mut second = commit("logs", &s, vec![small("ab2")], vec![path("a"), path("b")]);
    second.removals_read = true;
    let refused = catalog.commit_table(&second).await.unwrap_err();
    assert!(
        matches!(&refused, tarn_catalog::Error::Conflict(m)
            if m.contains("default.logs") && m.contains("2 of the files")),
        "{refused}"
    );
    assert_eq!(paths().await, [path("ab"), path("c")]);

    // The first compaction scheduled a and b for deletion. A crawl that listed them before
    // it does not bring them back, and keeps the rest of what it found.
    let location = "file:///lake/logs/";
    let due = "2999-01-01T00:00:00.000Z";
    catalog
        .defer_deletes(location, &[path("a"), path("b")], due)
        .await
        .unwrap();
    let mut crawl = commit("logs", &s, vec![small("a"), small("b"), small("d")], vec![]);
    crawl.from_listing = true;
    catalog.commit_table(&crawl).await.unwrap();
    assert_eq!(paths().await, [path("ab"), path("c"), path("d")]);
    // Another writer's commit of a path is taken as it is (an ingest's own files).
    catalog
        .commit_table(&commit("logs", &s, vec![small("b")], vec![]))
        .await
        .unwrap();
    assert_eq!(paths().await, [path("ab"), path("b"), path("c"), path("d")]);
    let pending = catalog.due_deletes(due).await.unwrap();
    let pending: Vec<&str> = pending
        .iter()
        .filter(|d| d.1 == location)
        .map(|d| d.2.as_str())
        .collect();
    assert_eq!(pending, [path("a")]);
    let ids: Vec<i64> = catalog
        .due_deletes(due)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.0)
        .collect();
    catalog.forget_deletes(&ids).await.unwrap();
    assert!(catalog.drop_table("default", "logs").await.unwrap());
}

async fn properties_partitions_databases_views(catalog: &Catalog, table_id: i64) {
    // Properties: deprecation and pinned partitions, set and cleared.
    catalog
        .set_deprecated(table_id, Some("folder 'x' is gone"))
        .await
        .unwrap();
    let properties = catalog.table_properties(table_id).await.unwrap();
    assert_eq!(properties.deprecated.as_deref(), Some("folder 'x' is gone"));
    let pinned = vec![PinnedPartition {
        values: vec![Some("9".into())],
        path: "elsewhere/9".into(),
    }];
    catalog
        .set_pinned_partitions(table_id, &pinned)
        .await
        .unwrap();
    let with_pins = catalog.tables_with_pinned_partitions().await.unwrap();
    assert_eq!(with_pins, vec![(table_id, pinned.clone())]);
    catalog.set_deprecated(table_id, None).await.unwrap();
    catalog.set_pinned_partitions(table_id, &[]).await.unwrap();
    assert!(
        catalog
            .tables_with_pinned_partitions()
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        catalog.table_properties(table_id).await.unwrap().deprecated,
        None
    );

    // Partitions dropped by value.
    assert_eq!(
        catalog
            .drop_partition(table_id, &[Some("3".into())])
            .await
            .unwrap(),
        1
    );
    assert!(
        catalog
            .drop_partition(table_id, &[Some("3".into())])
            .await
            .is_err()
    );

    // Databases and views.
    assert!(catalog.create_database("sales", false).await.unwrap());
    assert!(!catalog.create_database("sales", true).await.unwrap());
    assert!(catalog.create_database("sales", false).await.is_err());
    let view = ViewDef {
        database: "sales".into(),
        name: "recent".into(),
        query: "SELECT 1".into(),
        resolve_in: "default".into(),
        columns: vec![ViewColumn {
            name: "x".into(),
            data_type: "Int64".into(),
        }],
    };
    assert!(catalog.create_view(&view, false, false).await.unwrap());
    assert!(catalog.create_view(&view, false, false).await.is_err());
    assert!(catalog.create_view(&view, true, false).await.unwrap());
    let views = catalog.views().await.unwrap();
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].definition, view);
    assert!(catalog.drop_database("sales", false, false).await.is_err());
    assert!(catalog.drop_database("sales", false, true).await.unwrap());
    assert!(catalog.views().await.unwrap().is_empty());
}

async fn crawls_history_and_deletes(catalog: &Catalog) {
    // Crawls and crawlers.
    let crawl = catalog
        .begin_crawl("file:///lake/", "default", Some("nightly"))
        .await
        .unwrap();
    catalog
        .finish_crawl(crawl, "succeeded", "{}")
        .await
        .unwrap();
    let history = catalog.crawl_history_of(Some("nightly"), 10).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].status, "succeeded");
    let crawler = CrawlerDef {
        name: "nightly".into(),
        location: "file:///lake/".into(),
        database: "default".into(),
        options: CrawlerOptions::default(),
        schedule: Some("0 3 * * *".into()),
        created_at: "2024-01-01T00:00:00Z".into(),
        last_started_at: None,
    };
    catalog.create_crawler(&crawler).await.unwrap();
    assert!(catalog.create_crawler(&crawler).await.is_err());
    catalog
        .crawler_started("nightly", "2024-01-02T00:00:00Z")
        .await
        .unwrap();
    // Two processes that found the same run due: the first claim lands, the second sees
    // the start moved and does not.
    let seen = Some("2024-01-02T00:00:00Z");
    let claims = [
        catalog
            .claim_crawler_run("nightly", seen, "2024-01-03T03:00:00Z")
            .await
            .unwrap(),
        catalog
            .claim_crawler_run("nightly", seen, "2024-01-03T03:00:01Z")
            .await
            .unwrap(),
    ];
    assert_eq!(claims, [true, false]);
    catalog
        .crawler_started("nightly", "2024-01-02T00:00:00Z")
        .await
        .unwrap();
    let stored = catalog.crawler("nightly").await.unwrap().unwrap();
    assert_eq!(
        stored.last_started_at.as_deref(),
        Some("2024-01-02T00:00:00Z")
    );
    assert!(catalog.drop_crawler("nightly").await.unwrap());

    // Query history: recorded, replaced by id, read back whole, forgotten by age.
    let mut record = QueryRecord {
        query_id: "q1".into(),
        user: "ana".into(),
        database: "default".into(),
        sql: "SELECT 1".into(),
        state: "running".into(),
        submitted_at: "2024-01-01T00:00:00Z".into(),
        queued_ms: 1,
        execution_ms: 2,
        rows: 3,
        error: None,
        stats: QueryStats {
            front_door: "flight".into(),
            result_cache_hit: true,
            bytes_scanned: 1 << 40,
            ..QueryStats::default()
        },
    };
    catalog.record_query(&record, None).await.unwrap();
    record.state = "finished".into();
    catalog.record_query(&record, None).await.unwrap();
    let read = catalog.query_record("q1").await.unwrap().unwrap();
    assert_eq!(read, record);
    assert_eq!(
        catalog.query_history(Some("ana"), 10).await.unwrap().len(),
        1
    );
    assert!(
        catalog
            .query_history(Some("bo"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    catalog
        .record_query(
            &QueryRecord {
                query_id: "q2".into(),
                submitted_at: "2024-02-01T00:00:00Z".into(),
                ..record.clone()
            },
            Some("2024-01-15T00:00:00Z"),
        )
        .await
        .unwrap();
    let ids: Vec<String> = catalog
        .query_history(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.query_id)
        .collect();
    assert_eq!(ids, ["q2"]);

    // Deferred deletes: a catalogued file is told apart from one that is not.
    catalog
        .defer_deletes(
            "file:///lake/events/",
            &[
                "events/day=1/a.parquet".to_owned(),
                "gone.parquet".to_owned(),
            ],
            "2024-01-01T00:00:00Z",
        )
        .await
        .unwrap();
    let due = catalog.due_deletes("2025-01-01T00:00:00Z").await.unwrap();
    let catalogued: Vec<(&str, bool)> = due.iter().map(|d| (d.2.as_str(), d.3)).collect();
    assert_eq!(
        catalogued,
        [("events/day=1/a.parquet", true), ("gone.parquet", false)]
    );
    catalog
        .forget_deletes(&due.iter().map(|d| d.0).collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(catalog.pending_deletes().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_suite_passes_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::open(dir.path()).await.unwrap();
    assert_eq!(catalog.backend(), Backend::Sqlite);
    suite(&catalog).await;
}

#[tokio::test]
async fn the_suite_passes_on_postgres() {
    let server = postgres::Postgres::start();
    let url = server.database("suite").await;
    let catalog = Catalog::connect(&url).await.unwrap();
    assert_eq!(catalog.backend(), Backend::Postgres);
    suite(&catalog).await;
    // A second front end starting on the migrated catalog migrates nothing and sees it.
    let again = Catalog::connect(&url).await.unwrap();
    assert_eq!(
        again.generation().await.unwrap(),
        catalog.generation().await.unwrap()
    );
}

/// Two front ends (two pools on one PostgreSQL catalog) commit files to one table at once,
/// creating it, widening its schema and adding to shared partitions: every file of every
/// commit is there at the end, with partition counts that add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn front_ends_sharing_postgres_lose_no_commit() {
    let server = postgres::Postgres::start();
    let url = server.database("shared").await;
    let a = Catalog::connect(&url).await.unwrap();
    let b = Catalog::connect(&url).await.unwrap();
    const COMMITS: usize = 12;
    let write = |catalog: Catalog, writer: &'static str| async move {
        for i in 0..COMMITS {
            // The files gain a column halfway: the table's schema widens while both write.
            let columns: Vec<(&str, DataType)> = if i >= COMMITS / 2 {
                vec![("id", DataType::Int64), ("extra", DataType::Utf8)]
            } else {
                vec![("id", DataType::Int64)]
            };
            let s = schema(&columns);
            let day = (i % 3).to_string();
            let files = vec![
                file(
                    &format!("events/day={day}/{writer}-{i}-0.parquet"),
                    &day,
                    1,
                    &s,
                ),
                file(
                    &format!("events/day={day}/{writer}-{i}-1.parquet"),
                    &day,
                    2,
                    &s,
                ),
            ];
            catalog
                .commit_table(&commit("shared", &s, files, vec![]))
                .await
                .unwrap();
        }
    };
    let (ra, rb) = tokio::join!(
        tokio::spawn(write(a.clone(), "a")),
        tokio::spawn(write(b.clone(), "b"))
    );
    ra.unwrap();
    rb.unwrap();
    let table = a.table("default", "shared").await.unwrap().unwrap();
    let files = b.files(table.id).await.unwrap();
    assert_eq!(files.len(), 2 * 2 * COMMITS);
    let rows: u64 = files.iter().map(|f| f.row_count).sum();
    assert_eq!(rows, 2 * 3 * COMMITS as u64);
    let partitions = a.partitions(table.id).await.unwrap();
    assert_eq!(partitions.len(), 3);
    assert_eq!(
        partitions.iter().map(|p| p.file_count).sum::<i64>(),
        (2 * 2 * COMMITS) as i64
    );
    // Every commit that changed the table is one version (after the first, which created
    // it at version 1); the last ones widened it.
    assert_eq!(table.version, 1 + (2 * COMMITS) as i64);
    assert_eq!(
        table.file_schema,
        schema(&[("id", DataType::Int64), ("extra", DataType::Utf8)])
    );
    assert_eq!(a.check().await.unwrap(), Vec::<String>::new());
}
