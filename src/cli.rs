//! The commands behind the `tarn` binary.

use std::io::Write;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::auth::{AuthConfig, Authenticator, Signer, hash_password, new_api_token};
use crate::catalog::Catalog;
use crate::config::{AuthCommand, Cli, Command, CrawlArgs, OutputFormat, ServeArgs, SqlArgs};
use crate::crawler::{CrawlOptions, Crawler};
use crate::engine::{Engine, EngineOptions};
use crate::error::{Error, Result};
use crate::flight::ServeOptions;
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
    // Auth helpers need no catalog.
    if let Command::Auth(command) = &cli.command {
        return auth_command(command);
    }
    let ctx = Context::open(&cli).await?;
    match &cli.command {
        Command::Crawl(args) => crawl(&ctx, args).await,
        Command::Sql(args) => sql(&ctx, args).await,
        Command::Serve(args) => serve(&ctx, &cli.data_dir, args).await,
        Command::Demo(args) => crate::demo::run(&ctx, &cli.data_dir, args).await,
        Command::Auth(command) => auth_command(command),
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

async fn serve(ctx: &Context, data_dir: &std::path::Path, args: &ServeArgs) -> Result<()> {
    let secret_file = args
        .secret_file
        .clone()
        .unwrap_or_else(|| data_dir.join("secret.key"));
    let signer = Signer::from_file(&secret_file)?;
    let auth = match &args.config {
        Some(path) => {
            let config = AuthConfig::load(path)?;
            if config.users.is_empty() && config.tokens.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "config file '{}' has no users and no tokens, so nobody could connect",
                    path.display()
                )));
            }
            Authenticator::new(&config, signer)
        }
        None if !args.listen.ip().is_loopback() && !args.insecure_no_auth => {
            return Err(Error::InvalidArgument(format!(
                "refusing to listen on {} without authentication: give --config with users or \
                 tokens, or pass --insecure-no-auth if the network is trusted",
                args.listen
            )));
        }
        None => Authenticator::disabled(signer),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some((
            std::fs::read(cert).map_err(|e| Error::io(cert, e))?,
            std::fs::read(key).map_err(|e| Error::io(key, e))?,
        )),
        _ => None,
    };
    let scheme = if tls.is_some() { "grpc+tls" } else { "grpc" };
    let options = ServeOptions {
        auth: std::sync::Arc::new(auth),
        tls,
    };
    let (listener, addr) = crate::flight::bind(args.listen).await?;
    announce_scheme(scheme, addr);
    crate::flight::serve_with(ctx.engine.clone(), listener, options, shutdown_signal()).await
}

/// `tarn auth …`.
fn auth_command(command: &AuthCommand) -> Result<()> {
    match command {
        AuthCommand::HashPassword => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .map_err(|e| Error::io("<stdin>", e))?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                return Err(Error::InvalidArgument(
                    "give the password on stdin, e.g. `read -s P; echo \"$P\" | tarn auth \
                     hash-password`"
                        .into(),
                ));
            }
            println!("{}", hash_password(password)?);
        }
        AuthCommand::NewToken => {
            let (token, sha256) = new_api_token();
            println!("token:  {token}");
            println!("sha256 = \"{sha256}\"");
        }
    }
    Ok(())
}

/// Prints the line clients and test harnesses wait for.
pub fn announce(addr: std::net::SocketAddr) {
    announce_scheme("grpc", addr);
}

fn announce_scheme(scheme: &str, addr: std::net::SocketAddr) {
    println!("Tarn Flight SQL listening on {scheme}://{addr}");
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
