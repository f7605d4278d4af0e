//! Shared test harness: fixture lakes written by the test, a Tarn context over a temporary
//! data directory, and an in-process Flight SQL server on 127.0.0.1:0.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow_flight::sql::client::FlightSqlServiceClient;
use chrono::NaiveDateTime;
use parquet::arrow::ArrowWriter;
use tarn_lake::catalog::Catalog;
use tarn_lake::crawler::{CrawlOptions, CrawlSummary, Crawler};
use tarn_lake::engine::{Engine, EngineOptions};
use tarn_lake::storage::StoreRegistry;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// Writes `batch` as a Parquet file at `path`, creating parent directories.
pub fn write_parquet(path: &Path, batch: &RecordBatch) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
}

/// Writes raw bytes at `path`, creating parent directories.
pub fn write_bytes(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

pub fn micros(ts: &str) -> i64 {
    NaiveDateTime::parse_from_str(ts, "%Y-%m-%d %H:%M:%S")
        .unwrap()
        .and_utc()
        .timestamp_micros()
}

fn ts_field() -> Field {
    Field::new(
        "ts",
        DataType::Timestamp(TimeUnit::Microsecond, None),
        false,
    )
}

/// An events file in the first writer schema (user_id int32, value float32).
pub fn events_v1(ts: &[&str], users: &[i32], kinds: &[&str], values: &[f32]) -> RecordBatch {
    let schema = Schema::new(vec![
        ts_field(),
        Field::new("user_id", DataType::Int32, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("value", DataType::Float32, false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMicrosecondArray::from(
            ts.iter().map(|t| micros(t)).collect::<Vec<_>>(),
        )),
        Arc::new(Int32Array::from(users.to_vec())),
        Arc::new(StringArray::from(kinds.to_vec())),
        Arc::new(Float32Array::from(values.to_vec())),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).unwrap()
}

/// An events file in the evolved writer schema (int64, float64, a new `country`; columns
/// in a different order, to prove merging is by name).
pub fn events_v2(
    ts: &[&str],
    users: &[i64],
    kinds: &[&str],
    values: &[f64],
    countries: &[Option<&str>],
) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        ts_field(),
        Field::new("kind", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("country", DataType::Utf8, true),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(users.to_vec())),
        Arc::new(TimestampMicrosecondArray::from(
            ts.iter().map(|t| micros(t)).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(kinds.to_vec())),
        Arc::new(Float64Array::from(values.to_vec())),
        Arc::new(StringArray::from(countries.to_vec())),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).unwrap()
}

pub fn users_batch() -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("country", DataType::Utf8, false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5])),
        Arc::new(StringArray::from(vec!["ann", "bob", "cy", "dee", "eve"])),
        Arc::new(StringArray::from(vec!["DE", "US", "FR", "DE", "JP"])),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).unwrap()
}

/// A Firehose-style lake with everything a real one accumulates:
///
/// - `events/year=2024/month=01/day=05/hour=13|14/` in the first schema (5 rows),
///   `events/year=2024/month=01/day=06/hour=00/` in the evolved schema (4 rows);
/// - a `_SUCCESS` marker, a `.crc` side file, an abandoned `_temporary/` upload, a
///   `._COPYING_` upload in progress, an empty file, and a corrupt Parquet file;
/// - `users/users.parquet` (5 users).
pub fn firehose_lake(root: &Path) {
    let events = root.join("events");
    write_parquet(
        &events.join("year=2024/month=01/day=05/hour=13/part-0.parquet"),
        &events_v1(
            &[
                "2024-01-05 13:00:00",
                "2024-01-05 13:10:00",
                "2024-01-05 13:50:00",
            ],
            &[1, 2, 1],
            &["click", "view", "click"],
            &[1.5, 2.0, 3.25],
        ),
    );
    write_parquet(
        &events.join("year=2024/month=01/day=05/hour=14/part-0.parquet"),
        &events_v1(
            &["2024-01-05 14:05:00", "2024-01-05 14:20:00"],
            &[2, 3],
            &["view", "buy"],
            &[4.0, 10.5],
        ),
    );
    write_parquet(
        &events.join("year=2024/month=01/day=06/hour=00/part-0.parquet"),
        &events_v2(
            &[
                "2024-01-06 00:01:00",
                "2024-01-06 00:02:00",
                "2024-01-06 00:30:00",
                "2024-01-06 00:59:00",
            ],
            &[1, 3, 3, 4],
            &["view", "buy", "click", "view"],
            &[0.5, 20.0, 1.0, 2.0],
            &[Some("DE"), Some("FR"), Some("FR"), None],
        ),
    );
    write_bytes(&events.join("year=2024/month=01/day=05/_SUCCESS"), b"");
    write_bytes(
        &events.join("year=2024/month=01/day=06/hour=00/.part-0.parquet.crc"),
        b"crc",
    );
    write_bytes(
        &events.join("_temporary/0/_temporary/attempt_1/part-9.parquet"),
        b"partial",
    );
    write_bytes(
        &events.join("year=2024/month=01/day=06/hour=00/part-7.parquet._COPYING_"),
        b"PAR1",
    );
    write_bytes(
        &events.join("year=2024/month=01/day=06/hour=00/empty.parquet"),
        b"",
    );
    let mut corrupt = b"PAR1".to_vec();
    corrupt.extend_from_slice(&[0xAB; 64]);
    corrupt.extend_from_slice(&40u32.to_le_bytes());
    corrupt.extend_from_slice(b"PAR1");
    write_bytes(
        &events.join("year=2024/month=01/day=06/hour=00/corrupt.parquet"),
        &corrupt,
    );
    write_parquet(&root.join("users/users.parquet"), &users_batch());
}

/// A data directory with a catalog, a crawler and an engine over it.
pub struct Env {
    pub dir: TempDir,
    pub catalog: Catalog,
    pub stores: Arc<StoreRegistry>,
    pub engine: Engine,
}

impl Env {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::open(dir).await
    }

    pub async fn open(dir: TempDir) -> Self {
        let catalog = Catalog::open(&dir.path().join("data")).await.unwrap();
        let stores = Arc::new(StoreRegistry::default());
        let warehouse = dir.path().join("warehouse");
        std::fs::create_dir_all(&warehouse).unwrap();
        let engine = Engine::new(
            catalog.clone(),
            Arc::clone(&stores),
            // SQL may create tables anywhere under the test's directory.
            &EngineOptions {
                allowed_locations: vec![dir.path().to_string_lossy().into_owned()],
                warehouse: Some(warehouse.to_string_lossy().into_owned()),
                // As a server: rollups' rows in memory.
                rollup_memory: 64 << 20,
                // As a server: repeated queries answered from the result cache.
                result_cache: 64 << 20,
                ..EngineOptions::default()
            },
        )
        .unwrap();
        Self {
            dir,
            catalog,
            stores,
            engine,
        }
    }

    pub fn lake(&self) -> PathBuf {
        self.dir.path().join("lake")
    }

    pub async fn crawl(&self, location: &Path) -> CrawlSummary {
        self.crawl_with(location, CrawlOptions::default()).await
    }

    pub async fn crawl_with(&self, location: &Path, options: CrawlOptions) -> CrawlSummary {
        Crawler::new(self.catalog.clone(), Arc::clone(&self.stores))
            .crawl(&location.to_string_lossy(), &options)
            .await
            .unwrap()
    }

    /// The partition columns of `default.name`, as `name type`.
    pub async fn partition_types(&self, name: &str) -> Vec<String> {
        let table = self.catalog.table("default", name).await.unwrap().unwrap();
        table
            .partition_columns
            .iter()
            .map(|c| format!("{} {}", c.name, c.data_type))
            .collect()
    }

    /// Runs `sql` and renders the result as rows of strings (NULL as "NULL").
    pub async fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let (_, batches) = self.engine.query(sql).await.unwrap();
        render(&batches)
    }
}

pub fn render(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let options = arrow::util::display::FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect(),
            );
        }
    }
    out
}

/// A Flight SQL server running in this process until dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<tarn_lake::Result<()>>>,
}

impl TestServer {
    pub async fn start(engine: Engine) -> Self {
        Self::start_with(engine, tarn_server::serve::ServeOptions::default()).await
    }

    pub async fn start_with(engine: Engine, options: tarn_server::serve::ServeOptions) -> Self {
        let (listener, addr) = tarn_server::serve::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(tarn_server::serve::serve_with(
            engine,
            listener,
            options,
            async {
                let _ = rx.await;
            },
        ));
        Self {
            addr,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub async fn client(&self) -> FlightSqlServiceClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        FlightSqlServiceClient::new(channel)
    }

    /// Stops the server and reports whether it ended cleanly.
    pub async fn stop(mut self) -> tarn_lake::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("server task panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The small tables the differential generator's findings were reduced to, one Parquet
/// file each (crawled as database `r` by the SQL logic tests): `sales`, `customers` (keys
/// repeat), `returns` (NULL keys), `stores`, `products` (NULL keys and costs) and `g`
/// (zeros to divide by).
pub fn reduced_lake(root: &Path) {
    use arrow::array::Decimal128Array;
    let int = |v: &[Option<i64>]| Arc::new(Int64Array::from(v.to_vec())) as ArrayRef;
    let text = |v: &[&str]| Arc::new(StringArray::from(v.to_vec())) as ArrayRef;
    let money = |v: &[Option<i128>]| {
        Arc::new(
            Decimal128Array::from(v.to_vec())
                .with_precision_and_scale(15, 2)
                .unwrap(),
        ) as ArrayRef
    };
    let table = |name: &str, columns: Vec<(&str, ArrayRef)>| {
        let fields: Vec<Field> = columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect();
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns.into_iter().map(|(_, a)| a).collect(),
        )
        .unwrap();
        write_parquet(&root.join(name).join("part-0.parquet"), &batch);
    };
    let s = Some;
    table(
        "sales",
        vec![
            ("sale_id", int(&[s(1), s(2), s(3), s(4), s(5)])),
            ("cust_id", int(&[s(101), s(101), s(202), s(202), s(303)])),
            ("qty", int(&[s(20), s(3), s(30), s(1), s(16)])),
            (
                "price",
                money(&[Some(100), Some(200), None, Some(400), Some(500)]),
            ),
            ("prod_id", int(&[s(10), None, s(20), None, s(30)])),
        ],
    );
    table(
        "customers",
        vec![
            ("cust_id", int(&[s(101), s(101), s(202), s(202), s(303)])),
            ("city", text(&["NEW YORK", "Bergen", "東京", "a%b", "Oslo"])),
            ("home_store", int(&[s(1), s(2), s(1), s(2), s(3)])),
        ],
    );
    table(
        "returns",
        vec![
            ("ret_id", int(&[s(1), s(2), s(3), s(4)])),
            ("sale_id", int(&[s(1), None, s(2), None])),
            ("rqty", int(&[s(1), s(2), s(9), s(3)])),
        ],
    );
    table(
        "stores",
        vec![
            ("store_id", int(&[s(1), s(2), s(3)])),
            ("region", text(&["north", "south", "north"])),
        ],
    );
    table(
        "products",
        vec![
            ("prod_id", int(&[s(10), None, s(20), s(30)])),
            ("unit_cost", money(&[Some(100), None, None, Some(700)])),
        ],
    );
    table(
        "g",
        vec![
            ("x", int(&[s(0), s(1), s(2), s(3), s(0), s(7)])),
            ("y", int(&[s(1), s(1), s(2), s(2), s(3), s(3)])),
        ],
    );
}
