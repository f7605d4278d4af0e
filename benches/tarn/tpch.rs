//! TPC-H in-process: DataFusion with default settings, the baseline `benches/tpch.py` sets
//! beside Tarn's Flight SQL server and DuckDB on the same files; and Tarn's own engine
//! without its server, which measures what Flight SQL adds.
//!
//! `cargo bench --bench tarn -- tpch DATA_DIR QUERIES_DIR SCALE WARM_RUNS [QUERY… | -]` registers
//! every folder of `DATA_DIR` as a Parquet table in a DataFusion session; with
//! `tarn:TARN_DATA_DIR` instead, it opens that Tarn data directory's catalog as `tarn sql`
//! does (no result cache). It runs each query once cold and `WARM_RUNS` times warm, and
//! prints one JSON object per query
//! (`{"query": 1, "ms": [cold, warm…], "rows": 4, "first": "…"}`), then
//! `{"peak_rss_kb": …}`. With `-` it first prints `{"ready": true}` once its tables are
//! registered, then reads the query numbers from stdin, one a line, and answers each as it
//! comes: `benches/tpch.py` passes 0 warm runs and sends a query once per run, so the
//! engines take turns run by run.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use clap::Parser;

use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use tarn::config::Cli;
use tarn::context::Context;

// The allocator Tarn's binary uses, so the comparison is of the engines.
type Failure = Box<dyn std::error::Error>;

pub async fn main() -> Result<(), Failure> {
    // Positional arguments are ours, after the benchmark's name.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .skip(1)
        .collect();
    let [data, queries, scale, runs, only @ ..] = args.as_slice() else {
        return Err("usage: tpch DATA_DIR QUERIES_DIR SCALE WARM_RUNS [QUERY… | -]".into());
    };
    let scale: f64 = scale.parse()?;
    let runs: usize = runs.parse()?;
    let engine = match data.strip_prefix("tarn:") {
        Some(dir) => {
            let cli = Cli::try_parse_from(["tarn", "--data-dir", dir, "sql", ""])?;
            Engine::Tarn(Box::new(Context::open(&cli).await?))
        }
        None => {
            let ctx = SessionContext::new();
            for entry in std::fs::read_dir(data)? {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let path = format!("{}/", entry.path().display());
                    ctx.register_parquet(&name, &path, ParquetReadOptions::default())
                        .await?;
                }
            }
            Engine::DataFusion(ctx)
        }
    };
    let queries = Path::new(queries);
    if only == ["-"] {
        // Driven by `benches/tpch.py`: one query number per line, answered as it comes,
        // so the engines can take turns run by run.
        println!("{}", serde_json::json!({"ready": true}));
        std::io::stdout().flush()?;
        for line in std::io::stdin().lines() {
            let q: usize = line?.trim().parse()?;
            run(&engine, queries, q, scale, runs).await?;
        }
    } else if only.is_empty() {
        for q in 1..=22 {
            run(&engine, queries, q, scale, runs).await?;
        }
    } else {
        for q in only {
            run(&engine, queries, q.parse()?, scale, runs).await?;
        }
    }
    println!("{}", serde_json::json!({"peak_rss_kb": peak_rss_kb()}));
    Ok(())
}

/// Runs query `q` once cold and `runs` times warm and prints its JSON line.
async fn run(
    engine: &Engine,
    queries: &Path,
    q: usize,
    scale: f64,
    runs: usize,
) -> Result<(), Failure> {
    let sql = query_text(queries, q, scale)?;
    let mut times = Vec::with_capacity(runs + 1);
    let mut rows = 0;
    let mut first = String::new();
    for _ in 0..=runs {
        let started = Instant::now();
        let batches = match engine {
            Engine::DataFusion(ctx) => ctx.sql(&sql).await?.collect().await?,
            Engine::Tarn(ctx) => ctx.engine.query(&sql).await?.1,
        };
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        rows = batches.iter().map(|b| b.num_rows()).sum();
        first = first_row(&batches)?;
    }
    println!(
        "{}",
        serde_json::json!({"query": q, "ms": times, "rows": rows, "first": first})
    );
    std::io::stdout().flush()?;
    Ok(())
}

/// What the queries run on.
enum Engine {
    DataFusion(SessionContext),
    Tarn(Box<Context>),
}

/// The query's text with the scale-dependent parameter of Q11 substituted.
fn query_text(dir: &Path, q: usize, scale: f64) -> Result<String, Failure> {
    let text = std::fs::read_to_string(dir.join(format!("q{q:02}.sql")))?;
    Ok(text
        .replace("{FRACTION}", &format!("{}", 0.0001 / scale))
        .trim()
        .trim_end_matches(';')
        .to_string())
}

/// The first row, values separated by `|` (to compare answers across engines).
fn first_row(batches: &[datafusion::arrow::record_batch::RecordBatch]) -> Result<String, Failure> {
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(String::new());
    };
    let options = FormatOptions::default().with_null("NULL");
    let mut values = Vec::new();
    for column in batch.columns() {
        let formatter = ArrayFormatter::try_new(column.as_ref(), &options)?;
        values.push(formatter.value(0).to_string());
    }
    Ok(values.join("|"))
}

/// The process's peak resident memory, from `/proc/self/status` (0 where unavailable).
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
