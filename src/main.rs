//! The `tarn` binary: parses the command line and calls the library.

use clap::Parser;
use tarn::config::Cli;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        tarn::config::Command::Serve(_) | tarn::config::Command::Demo(_)
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
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs piped to a file or a collector stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match tarn::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
