//! Crawl and planning speed, against DataFusion's own `ListingTable` schema inference over
//! the same files in the same run.
//!
//! ```sh
//! cargo bench --bench tarn -- crawl                    # 10,000 files in 2,000 partitions
//! cargo bench --bench tarn -- crawl --files 2000       # a smaller lake
//! ```
//!
//! The lake is generated once under `target/bench-data/` (20 to 100 columns: the writer
//! adds columns as partitions go by, so the crawl merges many schemas). Reported:
//! - cold crawl: files/s, and the split between listing and footer reads;
//! - re-crawl with no change: must read no footer;
//! - re-crawl after 1% new files: reads only those;
//! - DataFusion `ListingOptions::infer_schema` over the same lake (reads every footer);
//! - planning a partition-filtered query on a 100,000-file table from the catalog.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTableUrl};
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::aws::AmazonS3Builder;
use parquet::arrow::ArrowWriter;
use tarn_lake::catalog::{Catalog, FileEntry, PartitionColumn, PartitionType, TableCommit};
use tarn_lake::crawler::{CrawlOptions, Crawler};
use tarn_lake::engine::{Engine, EngineOptions};
use tarn_lake::storage::StoreRegistry;

use crate::arg;

fn write_file(path: &Path, columns: usize, seed: i64) {
    let mut fields = vec![
        Field::new("id", DataType::Int64, false),
        Field::new("kind", DataType::Utf8, false),
    ];
    let rows = 64;
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            (0..rows).map(|i| seed * 1000 + i),
        )),
        Arc::new(StringArray::from_iter_values(
            (0..rows).map(|i| format!("k{}", i % 7)),
        )),
    ];
    for c in 2..columns {
        fields.push(Field::new(format!("m{c:03}"), DataType::Float64, true));
        arrays.push(Arc::new(Float64Array::from_iter_values(
            (0..rows).map(|i| (seed + i + c as i64) as f64 / 4.0),
        )));
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("batch");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let file = std::fs::File::create(path).expect("create");
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
}

fn partition_dir(root: &Path, p: usize) -> PathBuf {
    let day = p / 24;
    root.join(format!(
        "events/year=2024/month={:02}/day={:02}/hour={:02}",
        day / 28 + 1,
        day % 28 + 1,
        p % 24
    ))
}

fn generate(root: &Path, files: usize, partitions: usize) {
    let stamp = root.join(".complete");
    if stamp.exists() {
        return;
    }
    let _ = std::fs::remove_dir_all(root);
    let started = Instant::now();
    let per_partition = files.div_ceil(partitions);
    for f in 0..files {
        let p = f / per_partition;
        // 20 columns at first, 100 by the last partition.
        let columns = 20 + 80 * p / partitions.max(1);
        write_file(
            &partition_dir(root, p).join(format!("part-{f:06}.parquet")),
            columns,
            f as i64,
        );
    }
    std::fs::write(&stamp, b"").expect("stamp");
    println!(
        "generated {files} files in {partitions} partitions in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// Where the 1% of new files go, under the lake's root.
const NEW_FILES: &str = "events/year=2025";

/// The same lake on local disk or in an S3 bucket (under `lake/`).
enum Lake {
    Local(PathBuf),
    S3(Arc<dyn ObjectStore>),
}

impl Lake {
    fn url(&self) -> String {
        match self {
            Lake::Local(root) => root.to_string_lossy().into_owned(),
            Lake::S3(_) => "s3://bench/lake".into(),
        }
    }

    /// Adds `n` new files (100 columns each) in a year of their own.
    async fn add_files(&self, n: usize) {
        let staging = tempfile::tempdir().expect("tempdir");
        let dir = match self {
            Lake::Local(root) => root.join(NEW_FILES),
            Lake::S3(_) => staging.path().join(NEW_FILES),
        };
        for f in 0..n {
            write_file(
                &dir.join(format!(
                    "month=01/day=01/hour={:02}/new-{f:05}.parquet",
                    f % 24
                )),
                100,
                f as i64,
            );
        }
        if let Lake::S3(store) = self {
            upload(store, staging.path(), "lake").await;
        }
    }

    async fn remove_added_files(&self) {
        match self {
            Lake::Local(root) => std::fs::remove_dir_all(root.join(NEW_FILES)).expect("cleanup"),
            Lake::S3(store) => {
                let prefix = object_store::path::Path::from(format!("lake/{NEW_FILES}"));
                let keys: Vec<_> = store
                    .list(Some(&prefix))
                    .map_ok(|m| m.location)
                    .try_collect()
                    .await
                    .expect("list");
                for key in keys {
                    store.delete(&key).await.expect("delete");
                }
            }
        }
    }
}

/// Cold crawl, re-crawl with no change, re-crawl after 1% new files, and DataFusion's own
/// schema inference over the same files. False when `--cold-only` stops after the first.
async fn crawl_cases(crawler: &Crawler, lake: &Lake, files: usize, ctx: &SessionContext) -> bool {
    let url = lake.url();
    // Each lake is crawled into a database of its own.
    let options = CrawlOptions {
        database: match lake {
            Lake::Local(_) => "local".into(),
            Lake::S3(_) => "s3".into(),
        },
        ..CrawlOptions::default()
    };
    let t = Instant::now();
    let cold = crawler.crawl(&url, &options).await.expect("crawl");
    let cold_time = t.elapsed();
    assert!(cold.problems.is_empty(), "{cold}");
    println!(
        "tarn cold crawl:            {:>8.0} files/s  ({:.2}s: listing {:.2}s, footers {:.2}s, \
         catalog commit {:.2}s, rest {:.2}s)",
        rate(cold.footers_read, cold_time),
        cold_time.as_secs_f64(),
        cold.list_ms as f64 / 1000.0,
        cold.footer_ms as f64 / 1000.0,
        cold.commit_ms as f64 / 1000.0,
        (cold
            .elapsed_ms
            .saturating_sub(cold.list_ms + cold.footer_ms + cold.commit_ms)) as f64
            / 1000.0,
    );
    // `--cold-only`: stop here (for profiling the cold crawl alone).
    if std::env::args().any(|a| a == "--cold-only") {
        return false;
    }

    let t = Instant::now();
    let again = crawler.crawl(&url, &options).await.expect("crawl");
    let again_time = t.elapsed();
    println!(
        "tarn re-crawl, no change:   {:>8.0} files/s  ({:.3}s: listing {:.3}s, footers read: {})",
        rate(again.files_listed, again_time),
        again_time.as_secs_f64(),
        again.list_ms as f64 / 1000.0,
        again.footers_read
    );

    lake.add_files((files / 100).max(1)).await;
    let t = Instant::now();
    let delta = crawler.crawl(&url, &options).await.expect("crawl");
    let delta_time = t.elapsed();
    println!(
        "tarn re-crawl, 1% new:      {:>8.3}s        (listing {:.3}s, footers read: {}, files added: {})",
        delta_time.as_secs_f64(),
        delta.list_ms as f64 / 1000.0,
        delta.footers_read,
        delta.files_added
    );
    lake.remove_added_files().await;

    // The peer: DataFusion's ListingTable schema inference reads every footer.
    let table = ListingTableUrl::parse(format!("{url}/events/")).expect("url");
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let t = Instant::now();
    let schema = options
        .infer_schema(&ctx.state(), &table)
        .await
        .expect("infer");
    let df_time = t.elapsed();
    println!(
        "datafusion infer_schema:    {:>8.0} files/s  ({:.2}s, {} columns)",
        rate(files as u64, df_time),
        df_time.as_secs_f64(),
        schema.fields().len()
    );
    println!(
        "ratio, cold crawl vs datafusion inference: {:.2}x (tarn also keeps per-file statistics and partitions)",
        df_time.as_secs_f64() / cold_time.as_secs_f64()
    );
    true
}

/// Uploads every file under `dir` to `store` under `prefix`, 32 at a time.
async fn upload(store: &Arc<dyn ObjectStore>, dir: &Path, prefix: &str) {
    let mut paths = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                paths.push(path);
            }
        }
    }
    futures::stream::iter(paths)
        .map(|path| async move {
            let rel = path.strip_prefix(dir).expect("inside");
            let key = object_store::path::Path::from(format!("{prefix}/{}", rel.display()));
            let bytes = std::fs::read(&path).expect("read");
            store.put(&key, bytes.into()).await.expect("put");
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

/// A moto S3 API server on 127.0.0.1 (from the test venv), stopped when dropped.
struct Moto {
    child: std::process::Child,
    port: u16,
}

impl Moto {
    /// Starts one, setting up the venv first; `None` (with the reason) when it cannot.
    fn start() -> Option<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let venv = std::process::Command::new(root.join("scripts/venv")).status();
        if !matches!(venv, Ok(s) if s.success()) {
            println!("-- S3 API server: skipped (scripts/venv failed: {venv:?}) --");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .ok()?;
        let child = std::process::Command::new(root.join(".venv/bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                println!("-- S3 API server: skipped (moto did not start within 60s) --");
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    /// Creates `bucket` and returns a store for it.
    fn bucket(&self, bucket: &str) -> object_store::Result<Arc<dyn ObjectStore>> {
        use std::io::{Read, Write};
        // An unsigned PUT: moto does not check signatures, and object_store has no call
        // for creating buckets.
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        write!(
            stream,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
            self.port
        )
        .expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        Ok(Arc::new(
            AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_endpoint(format!("http://127.0.0.1:{}", self.port))
                .with_allow_http(true)
                .with_region("us-east-1")
                .with_access_key_id("bench")
                .with_secret_access_key("bench")
                .build()?,
        ))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn main() {
    let files = arg("--files", 10_000);
    let partitions = arg("--partitions", (files / 5).max(1));
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let root = PathBuf::from(target).join(format!("bench-data/lake-{files}-{partitions}"));
    generate(&root, files, partitions);
    let root = std::fs::canonicalize(&root).expect("canonical");
    let _ = std::fs::remove_dir_all(root.join(NEW_FILES));

    let data = tempfile::tempdir().expect("tempdir");
    let catalog = Catalog::open(data.path()).await.expect("catalog");
    let stores = Arc::new(StoreRegistry::default());
    let crawler = Crawler::new(catalog.clone(), Arc::clone(&stores));

    println!("\n== crawl: {files} Parquet files, {partitions} partitions, 20-100 columns ==");
    println!("-- local disk --");
    let local = Lake::Local(root.clone());
    if !crawl_cases(&crawler, &local, files, &SessionContext::new()).await {
        return; // --cold-only
    }

    if std::env::args().any(|a| a == "--no-s3") {
        println!("-- S3 API server: skipped (--no-s3) --");
    } else if let Some(moto) = Moto::start() {
        println!("-- S3 API server (moto on 127.0.0.1, the same files) --");
        let store = moto.bucket("bench").expect("bucket");
        stores
            .register("s3://bench/", Arc::clone(&store))
            .expect("register");
        let t = Instant::now();
        upload(&store, &root, "lake").await;
        println!(
            "uploaded the lake in {:.1}s (not part of the measurements)",
            t.elapsed().as_secs_f64()
        );
        let ctx = SessionContext::new();
        ctx.register_object_store(
            &url::Url::parse("s3://bench").expect("url"),
            Arc::clone(&store),
        );
        crawl_cases(&crawler, &Lake::S3(store), files, &ctx).await;
        drop(moto);
    }

    // Planning over a large catalogued table: no listing, pruning from the catalog.
    let big_files = arg("--plan-files", 100_000);
    println!("\n== planning: a table of {big_files} catalogued files ==");
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("kind", DataType::Utf8, true),
    ]));
    let upserts: Vec<FileEntry> = (0..big_files)
        .map(|i| {
            let day = (i / 200) % 500;
            FileEntry {
                path: format!("big/day={day}/f-{i}.parquet"),
                size: 10_000,
                e_tag: None,
                last_modified: chrono::Utc::now(),
                row_count: 1_000,
                footer_size: Some(512),
                file_schema: Arc::clone(&schema),
                stats: Default::default(),
                stats_version: tarn_lake::catalog::STATS_VERSION,
                partition_values: vec![Some(day.to_string())],
                partition_location: format!("big/day={day}"),
            }
        })
        .collect();
    let t = Instant::now();
    catalog
        .commit_table(&TableCommit {
            database: "default".into(),
            name: "big".into(),
            location: format!("file://{}/big/", root.display()),
            format: tarn_lake::catalog::TableFormat::Parquet,
            partition_columns: vec![PartitionColumn {
                name: "day".into(),
                data_type: PartitionType::Int64,
            }],
            file_schema: Arc::clone(&schema),
            base_schema_version: None,
            upserts,
            removals: vec![],
            declared: None,
            format_state: None,
            create_only: false,
            one_file_per_partition: false,
            removals_read: false,
            from_listing: true,
            stream_flushed: None,
        })
        .await
        .expect("commit");
    println!(
        "catalog commit of {big_files} files: {:.2}s",
        t.elapsed().as_secs_f64()
    );
    let engine = Engine::new(catalog.clone(), stores, &EngineOptions::default()).expect("engine");
    let sql = "SELECT kind, count(*) FROM big WHERE day = 42 AND id > 5 GROUP BY kind";
    let t = Instant::now();
    let plan = engine
        .plan(sql, None)
        .await
        .expect("plan")
        .create_physical_plan()
        .await
        .expect("physical");
    println!(
        "first plan (loads the file list once per table version): {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    drop(plan);
    let runs = 50;
    let t = Instant::now();
    for _ in 0..runs {
        let df = engine.plan(sql, None).await.expect("plan");
        let _ = df.create_physical_plan().await.expect("physical");
    }
    println!(
        "planning a pruned query:    {:>8.2} ms each (mean of {runs}; goal < 10 ms; LIST calls: none, files come from the catalog)",
        t.elapsed().as_secs_f64() * 1000.0 / runs as f64
    );
}
