//! The commands behind the `tarn` binary.

use std::io::Write;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::catalog::Catalog;
use crate::config::{Cli, Command, CrawlArgs, OutputFormat, ServeArgs, SqlArgs};
use crate::crawler::{CrawlOptions, Crawler};
use crate::engine::{Engine, EngineOptions};
use crate::error::{Error, Result};
use crate::storage::StoreRegistry;

/// Everything a command needs: the catalog, the stores and an engine over them.
pub struct Context {
    pub catalog: Catalog,
    pub stores: Arc<StoreRegistry>,
    pub engine: Engine,
}

impl Context {
    /// Opens the catalog in the data directory and builds an engine over it.
    ///
    /// # Errors
    /// When the catalog cannot be opened or a DataFusion setting is invalid.
    pub async fn open(cli: &Cli) -> Result<Self> {
        let catalog = Catalog::open(&cli.data_dir).await?;
        let stores = Arc::new(StoreRegistry::default());
        // SQL may create tables under the data directory and the --allow-location roots.
        let mut allowed_locations = vec![cli.data_dir.to_string_lossy().into_owned()];
        allowed_locations.extend(cli.allow_locations.iter().cloned());
        let warehouse = match &cli.warehouse {
            Some(w) => w.clone(),
            None => {
                let dir = cli.data_dir.join("warehouse");
                std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                dir.to_string_lossy().into_owned()
            }
        };
        let options = EngineOptions {
            datafusion_config: cli.datafusion_config.clone(),
            allowed_locations,
            warehouse: Some(warehouse),
        };
        let engine = Engine::new(catalog.clone(), Arc::clone(&stores), &options)?;
        Ok(Self {
            catalog,
            stores,
            engine,
        })
    }

    pub fn crawler(&self) -> Crawler {
        Crawler::new(self.catalog.clone(), Arc::clone(&self.stores))
    }
}

/// Runs the command `cli` asks for.
///
/// # Errors
/// Whatever the command fails with; the binary prints it and exits non-zero.
pub async fn run(cli: Cli) -> Result<()> {
    let ctx = Context::open(&cli).await?;
    match &cli.command {
        Command::Crawl(args) => crawl(&ctx, args).await,
        Command::Sql(args) => sql(&ctx, args).await,
        Command::Serve(args) => serve(&ctx, args).await,
        Command::Demo(args) => crate::demo::run(&ctx, &cli.data_dir, args).await,
    }
}

async fn crawl(ctx: &Context, args: &CrawlArgs) -> Result<()> {
    let options = CrawlOptions {
        database: args.database.clone(),
        table: args.table.clone(),
        footer_concurrency: args.footer_concurrency.max(1),
        declared: crate::crawler::Declared {
            partition_types: args.partition_types.iter().cloned().collect(),
            ..Default::default()
        },
        include: args.include.clone(),
        exclude: args.exclude.clone(),
        max_tables: args.max_tables,
    };
    // A progress bar on stderr; indicatif draws nothing when stderr is not a terminal.
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:20}] {pos}/{len} footers {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let shown = bar.clone();
    let crawler = ctx.crawler().with_progress(move |p| {
        shown.set_length(p.footers_to_read);
        shown.set_position(p.footers_read);
        shown.set_message(format!(
            "{} listed, {:.1} MB",
            p.files_listed,
            p.bytes as f64 / 1e6
        ));
    });
    let summary = crawler.crawl(&args.location, &options).await;
    bar.finish_and_clear();
    let summary = summary?;
    if args.json {
        let json = serde_json::to_string_pretty(&summary)
            .map_err(|e| Error::Internal(format!("encoding the crawl summary: {e}")))?;
        println!("{json}");
    } else {
        println!("{summary}");
    }
    Ok(())
}

async fn sql(ctx: &Context, args: &SqlArgs) -> Result<()> {
    let (schema, batches) = ctx.engine.query(&args.query).await?;
    let mut out = std::io::stdout().lock();
    write_batches(&mut out, &schema, &batches, args.format)?;
    out.flush().map_err(|e| Error::io("<stdout>", e))
}

/// Writes `batches` in `format`.
///
/// # Errors
/// When writing fails.
pub fn write_batches(
    out: &mut dyn Write,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    format: OutputFormat,
) -> Result<()> {
    let io = |e: std::io::Error| Error::io("<stdout>", e);
    match format {
        OutputFormat::Table => {
            let table = if batches.is_empty() {
                arrow::util::pretty::pretty_format_batches(&[RecordBatch::new_empty(Arc::clone(
                    schema,
                ))])?
            } else {
                arrow::util::pretty::pretty_format_batches(batches)?
            };
            writeln!(out, "{table}").map_err(io)?;
        }
        OutputFormat::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            if batches.is_empty() {
                writer.write(&RecordBatch::new_empty(Arc::clone(schema)))?;
            }
            for batch in batches {
                writer.write(batch)?;
            }
        }
        OutputFormat::Json => {
            let mut writer = arrow::json::LineDelimitedWriter::new(out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
    }
    Ok(())
}

async fn serve(ctx: &Context, args: &ServeArgs) -> Result<()> {
    let (listener, addr) = crate::flight::bind(args.listen).await?;
    announce(addr);
    crate::flight::serve(ctx.engine.clone(), listener, shutdown_signal()).await
}

/// Prints the line clients and test harnesses wait for.
pub fn announce(addr: std::net::SocketAddr) {
    println!("Tarn Flight SQL listening on grpc://{addr}");
    let _ = std::io::stdout().flush();
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
