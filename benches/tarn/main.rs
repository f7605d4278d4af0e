//! Tarn's in-process benchmarks, one binary (each bench binary links the whole engine, so
//! one instead of three saves the build two links and ~0.7 GB):
//!
//! ```sh
//! cargo bench --bench tarn -- crawl [--files N] [--partitions N] [--cold-only]
//! cargo bench --bench tarn -- flight [--rows N] [--iterations N]
//! cargo bench --bench tarn -- tpch DATA_DIR QUERIES_DIR SCALE WARM_RUNS [QUERY… | -]
//! ```
//!
//! Each module's documentation says what it measures and against which peer.

use std::process::ExitCode;

mod crawl;
mod flight;
mod tpch;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The number after flag `name` on the command line (`--files 2000`), or `default`.
pub(crate) fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const USAGE: &str = "usage: cargo bench --bench tarn -- crawl|flight|tpch [ARGS]";

#[tokio::main]
async fn main() -> ExitCode {
    // `cargo test --all-targets` runs bench binaries too; only `cargo bench` passes
    // `--bench`, so the test run merely proves this compiles.
    if !std::env::args().any(|a| a == "--bench") {
        println!("Tarn's benchmarks: {USAGE}");
        return ExitCode::SUCCESS;
    }
    let benchmark = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    match benchmark.as_deref() {
        Some("crawl") => crawl::main().await,
        Some("flight") => flight::main().await,
        Some("tpch") => {
            if let Err(e) = tpch::main().await {
                eprintln!("tpch: {e}");
                return ExitCode::FAILURE;
            }
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
