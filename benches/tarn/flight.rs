//! Flight SQL service speed: round-trip latency and result throughput through Tarn's server
//! on loopback, against DataFusion in-process on the same query and files, in the same run.
//!
//! ```sh
//! cargo bench --bench tarn -- flight
//! cargo bench --bench tarn -- flight --rows 20000000 --iterations 500
//! ```
//!
//! Reported (p50 / p99 over the iterations):
//! - `SELECT 1` and a point query (`WHERE id = …` on a 1M-row table), with a connection
//!   reused across queries and with a fresh connection per query (as a short-lived function
//!   would connect), each against DataFusion in-process (`SessionContext::sql` + `collect`);
//! - throughput of `SELECT *` over a large table in GB/s of Arrow data received, against
//!   DataFusion collecting the same result in-process.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::TryStreamExt;
use parquet::arrow::ArrowWriter;
use tarn_lake::catalog::Catalog;
use tarn_lake::crawler::{CrawlOptions, Crawler};
use tarn_lake::engine::{Engine, EngineOptions};
use tarn_lake::storage::StoreRegistry;

use crate::arg;
use tonic::transport::Channel;

/// Writes `rows` rows as Parquet files of 1M rows under `dir`.
fn write_table(dir: &Path, rows: usize) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
        Field::new("label", DataType::Utf8, false),
    ]));
    let per_file = 1_000_000;
    for (n, start) in (0..rows).step_by(per_file).enumerate() {
        let end = (start + per_file).min(rows);
        let file = std::fs::File::create(dir.join(format!("part-{n:04}.parquet"))).expect("file");
        let mut writer = ArrowWriter::try_new(file, Arc::clone(&schema), None).expect("writer");
        for chunk in (start..end).step_by(65_536) {
            let stop = (chunk + 65_536).min(end);
            let batch = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(Int64Array::from_iter_values(
                        (chunk..stop).map(|i| i as i64),
                    )),
                    Arc::new(Float64Array::from_iter_values(
                        (chunk..stop).map(|i| i as f64 * 0.5),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        (chunk..stop).map(|i| format!("label-{}", i % 1000)),
                    )),
                ],
            )
            .expect("batch");
            writer.write(&batch).expect("write");
        }
        writer.close().expect("close");
    }
}

/// Bytes of the values a batch holds (slices counted by their extent, so decoded IPC
/// buffers shared between columns are not counted twice).
fn data_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
        .sum()
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn connect(addr: std::net::SocketAddr) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    FlightSqlServiceClient::new(channel)
}

/// Runs `sql` through Flight SQL; returns rows and Arrow bytes received.
async fn flight_query(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> (usize, usize) {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .expect("execute");
    let mut rows = 0;
    let mut bytes = 0;
    for endpoint in info.endpoint {
        let mut stream = client
            .do_get(endpoint.ticket.expect("ticket"))
            .await
            .expect("do_get");
        while let Some(batch) = stream.try_next().await.expect("batch") {
            rows += batch.num_rows();
            bytes += data_bytes(&batch);
        }
    }
    (rows, bytes)
}

async fn df_query(ctx: &SessionContext, sql: &str) -> (usize, usize) {
    let batches = ctx
        .sql(sql)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run");
    (
        batches.iter().map(RecordBatch::num_rows).sum(),
        batches.iter().map(data_bytes).sum(),
    )
}

struct Row {
    name: String,
    tarn: (f64, f64),
    datafusion: (f64, f64),
}

pub async fn main() {
    let rows = arg("--rows", 20_000_000);
    let iterations = arg("--iterations", 300);
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    println!("writing {rows} rows (big) and 1,000,000 rows (points)...");
    write_table(&lake.join("big"), rows);
    write_table(&lake.join("points"), 1_000_000);

    let catalog = Catalog::open(&dir.path().join("data"))
        .await
        .expect("catalog");
    let stores = Arc::new(StoreRegistry::default());
    Crawler::new(catalog.clone(), Arc::clone(&stores))
        .crawl(&lake.to_string_lossy(), &CrawlOptions::default())
        .await
        .expect("crawl");
    let engine = Engine::new(catalog, stores, &EngineOptions::default()).expect("engine");
    let (listener, addr) = tarn_server::serve::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    tokio::spawn(tarn_server::serve::serve(
        engine,
        listener,
        std::future::pending(),
    ));

    // DataFusion in-process over the same files, default settings.
    let ctx = SessionContext::new();
    for table in ["big", "points"] {
        ctx.register_parquet(
            table,
            lake.join(table).to_string_lossy().as_ref(),
            ParquetReadOptions::default(),
        )
        .await
        .expect("register");
    }

    let mut report = Vec::new();
    let queries = [
        ("SELECT 1", "SELECT 1".to_string()),
        (
            "point query",
            "SELECT id, value, label FROM points WHERE id = 123457".to_string(),
        ),
    ];
    for (name, sql) in &queries {
        // Warm both sides once.
        let mut client = connect(addr).await;
        flight_query(&mut client, sql).await;
        df_query(&ctx, sql).await;

        let mut reused = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let start = Instant::now();
            let (n, _) = flight_query(&mut client, sql).await;
            reused.push(start.elapsed());
            assert_eq!(n, 1);
        }
        let mut fresh = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let start = Instant::now();
            let mut c = connect(addr).await;
            let (n, _) = flight_query(&mut c, sql).await;
            fresh.push(start.elapsed());
            assert_eq!(n, 1);
        }
        let mut local = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let start = Instant::now();
            let (n, _) = df_query(&ctx, sql).await;
            local.push(start.elapsed());
            assert_eq!(n, 1);
        }
        let df = (
            ms(percentile(&mut local, 0.5)),
            ms(percentile(&mut local, 0.99)),
        );
        report.push(Row {
            name: format!("{name}, reused connection"),
            tarn: (
                ms(percentile(&mut reused, 0.5)),
                ms(percentile(&mut reused, 0.99)),
            ),
            datafusion: df,
        });
        report.push(Row {
            name: format!("{name}, new connection per query"),
            tarn: (
                ms(percentile(&mut fresh, 0.5)),
                ms(percentile(&mut fresh, 0.99)),
            ),
            datafusion: df,
        });
    }

    println!();
    println!(
        "| query | Tarn p50 ms | Tarn p99 ms | DataFusion p50 ms | DataFusion p99 ms | overhead p50 ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &report {
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:+.2} |",
            r.name,
            r.tarn.0,
            r.tarn.1,
            r.datafusion.0,
            r.datafusion.1,
            r.tarn.0 - r.datafusion.0
        );
    }

    // Throughput: the whole big table.
    let sql = "SELECT id, value, label FROM big";
    let mut client = connect(addr).await;
    let mut best_flight = f64::MAX;
    let mut best_df = f64::MAX;
    let mut flight_bytes = 0;
    let mut df_bytes = 0;
    for _ in 0..3 {
        let start = Instant::now();
        let (n, bytes) = flight_query(&mut client, sql).await;
        best_flight = best_flight.min(start.elapsed().as_secs_f64());
        assert_eq!(n, rows);
        flight_bytes = bytes;
        let start = Instant::now();
        let (n, bytes) = df_query(&ctx, sql).await;
        best_df = best_df.min(start.elapsed().as_secs_f64());
        assert_eq!(n, rows);
        df_bytes = bytes;
    }
    println!();
    println!("| result throughput ({rows} rows) | seconds | GB/s of Arrow data |");
    println!("|---|---:|---:|");
    println!(
        "| Tarn through Flight SQL (loopback) | {best_flight:.2} | {:.2} |",
        flight_bytes as f64 / best_flight / 1e9
    );
    println!(
        "| DataFusion in-process (collect) | {best_df:.2} | {:.2} |",
        df_bytes as f64 / best_df / 1e9
    );
    println!(
        "| ratio Tarn / DataFusion time | {:.2}x | |",
        best_flight / best_df
    );
}
