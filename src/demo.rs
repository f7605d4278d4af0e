//! `tarn demo`: writes a small lake laid out the way a Firehose-style writer leaves one,
//! crawls it, answers a few dashboard queries, defines a materialized view and answers a
//! dashboard question from the events and from the view, and serves it over Flight SQL.
//!
//! The lake (under `<data dir>/demo-lake`) holds:
//! An online-assessment product's data:
//! - `users/`: learners (id, name, country, plan, signup date);
//! - `scores/`: assessment attempts and their scores;
//! - `events/year=/month=/day=/hour=/`: the app's events, one file per hour, with a schema
//!   that evolves on the second day (`duration_ms` widens from int32 to int64 and a
//!   `device` column appears), `_SUCCESS` markers, and an abandoned `_temporary/` upload
//!   that the crawler must skip.
//!
//! The data is generated from a fixed seed, so every run writes the same lake.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use crate::config::{DemoArgs, OutputFormat};
use crate::context::{Context, shutdown_signal};
use crate::output::{announce, write_batches};
use tarn_lake::crawler::CrawlOptions;
use tarn_lake::error::{Error, Result};

const DAYS: u32 = 3;
const USERS: i64 = 1_000;
const SCORES: usize = 20_000;
const COUNTRIES: &[&str] = &["DE", "FR", "GB", "IN", "JP", "NL", "US", "BR"];
const PLANS: &[&str] = &["free", "school", "enterprise"];
const ASSESSMENTS: &[&str] = &[
    "algebra-1",
    "geometry-1",
    "reading-a",
    "reading-b",
    "chemistry-intro",
    "python-basics",
];
const EVENT_TYPES: &[&str] = &[
    "question_view",
    "question_view",
    "question_view",
    "answer_submit",
    "answer_submit",
    "hint_used",
    "session_start",
    "assessment_submit",
];
const DEVICES: &[&str] = &["web", "web", "ios", "android"];

/// The queries the demo answers, with a title each.
pub const DASHBOARD: &[(&str, &str)] = &[
    (
        "Events per day and type (date_trunc)",
        "SELECT date_trunc('day', event_time) AS day, event_type, count(*) AS events \
         FROM events GROUP BY 1, 2 ORDER BY 1, 3 DESC LIMIT 10",
    ),
    (
        "Answers in 15-minute windows, day 2, 13:00 (date_bin; partition pruning)",
        "SELECT date_bin(INTERVAL '15 minutes', event_time, TIMESTAMP '2026-01-01') AS window_start, \
         count(*) AS answers, count(DISTINCT user_id) AS learners \
         FROM events WHERE day = 2 AND hour = 13 AND event_type = 'answer_submit' \
         GROUP BY 1 ORDER BY 1",
    ),
    (
        "Average score by country and plan (join)",
        "SELECT u.country, u.plan, count(*) AS attempts, round(avg(s.score), 1) AS avg_score \
         FROM scores s JOIN users u ON s.user_id = u.user_id \
         GROUP BY 1, 2 ORDER BY avg_score DESC LIMIT 8",
    ),
    (
        "Most-submitted assessments per day (window function)",
        "SELECT day, assessment, submissions, rank FROM ( \
           SELECT day, assessment, count(*) AS submissions, \
                  rank() OVER (PARTITION BY day ORDER BY count(*) DESC) AS rank \
           FROM events WHERE event_type = 'assessment_submit' GROUP BY day, assessment) \
         WHERE rank <= 2 ORDER BY day, rank",
    ),
    (
        "Events by device (schema evolution: `device` appears on day 2, so day 1 is NULL)",
        "SELECT day, coalesce(device, '(not recorded)') AS device, count(*) AS events \
         FROM events GROUP BY 1, 2 ORDER BY 1, 2",
    ),
];

/// The materialized view the demo defines: events per hour and type, which the
/// dashboard's daily and hourly questions are answered from.
pub const VIEW: &str = "CREATE MATERIALIZED VIEW IF NOT EXISTS events_hourly AS \
    SELECT date_trunc('hour', event_time) AS hour_start, event_type, count(*) AS events \
    FROM events GROUP BY 1, 2";

/// A dashboard question the view answers (as a BI tool would write it).
pub const VIEW_QUESTION: &str = "SELECT date_trunc('day', event_time) AS day, event_type, \
    count(*) AS events FROM events GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2";

/// SplitMix64: a tiny, fixed pseudo-random sequence, so the demo lake is the same on
/// every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Runs the demo.
///
/// # Errors
/// When the lake cannot be written, crawled or queried, or the server cannot start.
pub async fn run(ctx: &Context, data_dir: &Path, args: &DemoArgs) -> Result<()> {
    let lake = data_dir.join("demo-lake");
    let started = Instant::now();
    let written = write_lake(&lake, args.events)?;
    if written {
        println!(
            "Wrote the demo lake ({} events) to {} in {:.2}s",
            args.events,
            lake.display(),
            started.elapsed().as_secs_f64()
        );
    } else {
        println!("Using the demo lake at {}", lake.display());
    }

    let summary = ctx
        .crawler()
        .crawl(&lake.to_string_lossy(), &CrawlOptions::default())
        .await?;
    println!("{summary}\n");

    let mut out = std::io::stdout().lock();
    for (title, sql) in DASHBOARD {
        let started = Instant::now();
        let (schema, batches) = ctx.engine.query(sql).await?;
        use std::io::Write;
        writeln!(
            out,
            "-- {title} ({:.0} ms)",
            started.elapsed().as_secs_f64() * 1000.0
        )
        .map_err(|e| Error::io("<stdout>", e))?;
        write_batches(&mut out, &schema, &batches, OutputFormat::Table)?;
    }
    drop(out);
    show_the_view(ctx).await?;

    if args.no_serve {
        return Ok(());
    }
    let (listener, addr) = tarn_server::serve::bind(args.listen).await?;
    let console = serve_console(ctx, data_dir, args).await;
    println!(
        "\n{console}\
         Connect with any Flight SQL client, for example:\n\
         \x20 Python (ADBC):  adbc_driver_flightsql.dbapi.connect(\"grpc://{addr}\")\n\
         \x20 JDBC:           jdbc:arrow-flight-sql://{addr}?useEncryption=false\n\
         \x20 Tarn:           tarn sql \"SELECT count(*) FROM events\"\n\
         Press Ctrl-C to stop.\n"
    );
    announce(addr);
    tarn_server::serve::serve(ctx.engine.clone(), listener, shutdown_signal()).await
}

/// Serves the web console and HTTP API on `--http-listen` (loopback, so without
/// authentication); returns the line that says where, or why not (the demo goes on).
async fn serve_console(ctx: &Context, data_dir: &Path, args: &DemoArgs) -> String {
    if !args.http_listen.ip().is_loopback() {
        return format!(
            "No console: {} is not a loopback address (the demo serves without \
             authentication; use `tarn serve --config … --http-listen …`).\n\n",
            args.http_listen
        );
    }
    let started = async {
        let signer = tarn_server::auth::Signer::from_file(&data_dir.join("secret.key"))?;
        let executions = tarn_server::http::Executions::new(
            &ctx.engine,
            std::time::Duration::from_secs(86_400),
        )?;
        let api = tarn_server::http::QueryApi {
            auth: Arc::new(tarn_server::auth::Authenticator::disabled(signer)),
            max_rows: 1_000_000,
            executions: Some(executions),
        };
        let (listener, addr) = tarn_server::serve::bind(args.http_listen).await?;
        let router = tarn_server::http::router(
            ctx.engine.clone(),
            tarn_server::http::Draining::default(),
            Some(api),
        );
        tokio::spawn(tarn_server::http::serve(
            listener,
            None,
            router,
            shutdown_signal(),
        ));
        Ok::<_, Error>(addr)
    };
    match started.await {
        Ok(addr) => format!(
            "Console:  http://{addr}/  (SQL, catalog, history, views; the HTTP API is under \
             /v1, described at /v1/openapi.json)\n\n"
        ),
        Err(e) => format!("No console: {e} (give another --http-listen).\n\n"),
    }
}

/// Defines the demo's materialized view (once), then answers a dashboard question from the
/// events themselves and from the view, and shows the `EXPLAIN` line that names it.
async fn show_the_view(ctx: &Context) -> Result<()> {
    let started = Instant::now();
    let (_, created) = ctx.engine.query(VIEW).await?;
    let said = crate::output::first_text(&created).unwrap_or_default();
    println!(
        "-- Materialized view events_hourly ({:.0} ms): {said}",
        started.elapsed().as_secs_f64() * 1000.0
    );
    let base = ctx.engine.without_rollup_rewrite();
    let started = Instant::now();
    let (_, from_events) = base.query(VIEW_QUESTION).await?;
    let from_events_ms = started.elapsed().as_secs_f64() * 1000.0;
    let started = Instant::now();
    let (_, from_view) = ctx.engine.query(VIEW_QUESTION).await?;
    let from_view_ms = started.elapsed().as_secs_f64() * 1000.0;
    let rows = |b: &[RecordBatch]| b.iter().map(RecordBatch::num_rows).sum::<usize>();
    println!(
        "-- Events per day and type: {from_events_ms:.1} ms from the events, \
         {from_view_ms:.1} ms from the view ({} rows, the same answer: {})",
        rows(&from_view),
        same_rows(&from_events, &from_view)
    );
    let (_, plan) = ctx
        .engine
        .query(&format!("EXPLAIN {VIEW_QUESTION}"))
        .await?;
    for line in crate::output::text_rows(&plan)
        .iter()
        .filter(|r| r.first().is_some_and(|c| c == "rollups"))
    {
        println!("   EXPLAIN: {}", line.get(1).map_or("", String::as_str));
    }
    println!();
    Ok(())
}

/// Whether two results hold the same rows (rendered as text).
fn same_rows(a: &[RecordBatch], b: &[RecordBatch]) -> bool {
    crate::output::text_rows(a) == crate::output::text_rows(b)
}

/// Writes the demo lake unless the same lake is already there. Returns whether it wrote.
fn write_lake(lake: &Path, events: usize) -> Result<bool> {
    let stamp = lake.join(".tarn-demo");
    let wanted = format!("format=2 events={events}\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(false);
    }
    if lake.exists() {
        std::fs::remove_dir_all(lake).map_err(|e| Error::io(lake, e))?;
    }
    let mut rng = Rng(0x7A2E_2026);
    write_users(&lake.join("users"), &mut rng)?;
    write_scores(&lake.join("scores"), &mut rng)?;
    write_events(&lake.join("events"), events, &mut rng)?;
    // An abandoned upload: a crawler that does not skip `_temporary` would fail on it.
    let temp = lake.join("events/_temporary/0");
    mkdir(&temp)?;
    write_file(&temp.join("part-00000.parquet"), b"PAR1 partial upload")?;
    write_file(&stamp, wanted.as_bytes())?;
    Ok(true)
}

fn write_users(dir: &Path, rng: &mut Rng) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("country", DataType::Utf8, false),
        Field::new("plan", DataType::Utf8, false),
        Field::new("signup_date", DataType::Date32, false),
    ]));
    let ids: Vec<i64> = (1..=USERS).collect();
    let names: Vec<String> = ids.iter().map(|i| format!("user-{i:04}")).collect();
    let countries: Vec<&str> = ids.iter().map(|_| rng.pick(COUNTRIES)).collect();
    let plans: Vec<&str> = ids.iter().map(|_| rng.pick(PLANS)).collect();
    // Sign-ups spread over 2025 (days since the epoch).
    let signup: Vec<i32> = ids.iter().map(|_| 20_089 + rng.below(365) as i32).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids)),
        Arc::new(StringArray::from(names)),
        Arc::new(StringArray::from(countries)),
        Arc::new(StringArray::from(plans)),
        Arc::new(Date32Array::from(signup)),
    ];
    let batch = RecordBatch::try_new(schema, columns)?;
    mkdir(dir)?;
    write_parquet(&dir.join("users.parquet"), &batch)
}

fn write_scores(dir: &Path, rng: &mut Rng) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("attempt_id", DataType::Int64, false),
        Field::new("user_id", DataType::Int64, false),
        Field::new("assessment", DataType::Utf8, false),
        Field::new("score", DataType::Float64, false),
        Field::new("max_score", DataType::Int32, false),
        Field::new(
            "submitted_at",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
    ]));
    mkdir(dir)?;
    // Two files, as a daily export would leave them.
    let per_file = SCORES / 2;
    for part in 0..2 {
        let ids: Vec<i64> = (0..per_file)
            .map(|i| (part * per_file + i) as i64 + 1)
            .collect();
        let users: Vec<i64> = ids
            .iter()
            .map(|_| 1 + rng.below(USERS as u64) as i64)
            .collect();
        let assessments: Vec<&str> = ids.iter().map(|_| rng.pick(ASSESSMENTS)).collect();
        // Scores cluster around 50 (a sum of three uniform draws), between 0 and 100.
        let scores: Vec<f64> = ids
            .iter()
            .map(|_| {
                let s = (rng.below(41) + rng.below(41) + rng.below(41)) as f64 * 0.85;
                (s * 10.0).round() / 10.0
            })
            .collect();
        let times: Vec<i64> = ids
            .iter()
            .map(|_| BASE_US + rng.below(u64::from(DAYS) * 24 * HOUR_US as u64) as i64)
            .collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(Int64Array::from(users)),
            Arc::new(StringArray::from(assessments)),
            Arc::new(Float64Array::from(scores)),
            Arc::new(Int32Array::from(vec![100; per_file])),
            Arc::new(TimestampMicrosecondArray::from(times)),
        ];
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
        write_parquet(&dir.join(format!("scores-{part:03}.parquet")), &batch)?;
    }
    Ok(())
}

/// 2026-01-01T00:00:00 in microseconds since the epoch.
const BASE_US: i64 = 1_767_225_600_000_000;
const HOUR_US: i64 = 3_600_000_000;

fn write_events(dir: &Path, events: usize, rng: &mut Rng) -> Result<()> {
    let hours = (DAYS * 24) as usize;
    let per_hour = events.div_ceil(hours).max(1);
    let mut remaining = events;
    for h in 0..hours {
        let n = per_hour.min(remaining);
        remaining -= n;
        let day = (h / 24) as u32 + 1;
        let hour = (h % 24) as u32;
        // From day 2 the writer's schema evolves: duration_ms widens and device appears.
        let evolved = day >= 2;
        let mut times: Vec<i64> = (0..n)
            .map(|_| BASE_US + h as i64 * HOUR_US + rng.below(HOUR_US as u64) as i64)
            .collect();
        times.sort_unstable();
        let users: Vec<i64> = (0..n).map(|_| 1 + rng.below(USERS as u64) as i64).collect();
        let types: Vec<&str> = (0..n).map(|_| rng.pick(EVENT_TYPES)).collect();
        let assessments: Vec<&str> = (0..n).map(|_| rng.pick(ASSESSMENTS)).collect();
        let durations: Vec<i64> = (0..n).map(|_| 200 + rng.below(60_000) as i64).collect();

        let mut fields = vec![
            Field::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
            Field::new("user_id", DataType::Int64, false),
            Field::new("event_type", DataType::Utf8, false),
            Field::new("assessment", DataType::Utf8, false),
        ];
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampMicrosecondArray::from(times)),
            Arc::new(Int64Array::from(users)),
            Arc::new(StringArray::from(types)),
            Arc::new(StringArray::from(assessments)),
        ];
        if evolved {
            fields.push(Field::new("duration_ms", DataType::Int64, false));
            columns.push(Arc::new(Int64Array::from(durations)));
            let devices: Vec<&str> = (0..n).map(|_| rng.pick(DEVICES)).collect();
            fields.push(Field::new("device", DataType::Utf8, true));
            columns.push(Arc::new(StringArray::from(devices)));
        } else {
            fields.push(Field::new("duration_ms", DataType::Int32, false));
            let narrow: Vec<i32> = durations.iter().map(|d| *d as i32).collect();
            columns.push(Arc::new(Int32Array::from(narrow)));
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        let part = dir.join(format!("year=2026/month=01/day={day:02}/hour={hour:02}"));
        mkdir(&part)?;
        write_parquet(&part.join(format!("events-{h:04}.parquet")), &batch)?;
        if hour == 23 {
            write_file(
                &dir.join(format!("year=2026/month=01/day={day:02}/_SUCCESS")),
                b"",
            )?;
        }
    }
    Ok(())
}

fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let props = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_max_row_group_row_count(Some(2_048))
        .build();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props))
        .map_err(|e| Error::Internal(format!("writing {}: {e}", path.display())))?;
    writer
        .write(batch)
        .and_then(|()| writer.close().map(|_| ()))
        .map_err(|e| Error::Internal(format!("writing {}: {e}", path.display())))
}

fn mkdir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(PathBuf::from(path), e))
}
