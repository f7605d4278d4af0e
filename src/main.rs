//! The `tarn` binary: parses the command line and calls the library.

use clap::Parser;
use tarn::config::Cli;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Checked before the runtime starts, so as little code as possible runs first.
    if let Some(missing) = missing_cpu_features() {
        eprintln!(
            "error: this tarn binary was built for x86-64-v3, and this CPU lacks {missing}; \
             build it for this CPU with RUSTFLAGS=\"-C target-cpu=native\" cargo build --release"
        );
        return std::process::ExitCode::FAILURE;
    }
    run()
}

#[tokio::main]
async fn run() -> std::process::ExitCode {
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        tarn::config::Command::Serve(_)
            | tarn::config::Command::Demo(_)
            | tarn::config::Command::Worker(_)
    ) {
        // A one-shot command piped into `head` stops quietly when the pipe closes, as
        // other command-line tools do, instead of failing on the next print. (Servers keep
        // Rust's default of ignoring SIGPIPE: a client hanging up is an error to handle.)
        #[cfg(unix)]
        // SAFETY: `signal` only sets this process's disposition of SIGPIPE back to the
        // default; no handler is installed, so no Rust code runs in signal context.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // The Delta kernel logs at ERROR what Tarn reports itself (e.g. a version that does not
    // exist, answered as a clear error); its logs show only when asked for by name.
    let directives = if cli.log.contains("buoyant_kernel") {
        cli.log.clone()
    } else {
        format!("{},buoyant_kernel=off", cli.log)
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        // One JSON object a line; a statement's lines carry its span (query id, user).
        tarn::config::LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        // Colours only on a terminal: logs piped to a file or a collector stay plain text.
        tarn::config::LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    match tarn::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The instruction-set extensions the binary was compiled to use that this CPU does not
/// have (see `.cargo/config.toml`), so a binary copied to an older machine stops with a
/// message instead of an illegal-instruction crash in the middle of a query.
fn missing_cpu_features() -> Option<String> {
    #[allow(unused_mut)]
    let mut missing: Vec<&str> = Vec::new();
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    if !std::arch::is_x86_feature_detected!("avx2") {
        missing.push("AVX2");
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "bmi2"))]
    if !std::arch::is_x86_feature_detected!("bmi2") {
        missing.push("BMI2");
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "fma"))]
    if !std::arch::is_x86_feature_detected!("fma") {
        missing.push("FMA");
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}
