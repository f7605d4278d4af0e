//! The commands behind the `tarn` binary.

use std::io::Write;

use crate::config::CrawlerCommand;
use crate::config::{
    AuthCommand, CheckArgs, Cli, Command, CrawlArgs, CrawlsArgs, RemoteArgs, ServeArgs, SqlArgs,
    TableArgs, TablesArgs,
};
use crate::context::{Context, shutdown_signal};
use crate::output::{announce_scheme, write_batches};
use tarn_lake::catalog::CrawlerDef;
use tarn_lake::crawler::CrawlOptions;
use tarn_lake::crawler::CrawlSummary;
use tarn_lake::error::{Error, Result};
use tarn_server::admin::{AdminClient, AdminService, Remote, proto};
use tarn_server::auth::{AuthConfig, Authenticator, Signer, hash_password, new_api_token};
use tarn_server::serve::ServeOptions;

/// Runs the command `cli` asks for.
///
/// # Errors
/// Whatever the command fails with; the binary prints it and exits non-zero.
pub async fn run(cli: Cli) -> Result<()> {
    // Auth helpers need no catalog; remote admin commands use the server's.
    match &cli.command {
        Command::Auth(command) => return auth_command(command),
        Command::Worker(args) => {
            let shutdown = crate::context::shutdown_signal();
            return crate::cluster::worker(&cli.data_dir, args, shutdown).await;
        }
        Command::Crawl(args) if args.remote.server.is_some() => {
            return remote_crawl(args).await;
        }
        Command::Tables(TablesArgs { remote, .. })
        | Command::Describe(TableArgs { remote, .. })
        | Command::Partitions(TableArgs { remote, .. })
        | Command::Crawls(CrawlsArgs { remote, .. })
            if remote.server.is_some() =>
        {
            let admin = Admin::Remote(remote_of(remote)?.connect().await?);
            return admin_command(admin, &cli.command).await;
        }
        _ => {}
    }
    let ctx = Context::open(&cli).await?;
    match &cli.command {
        Command::Crawl(args) => crawl(&ctx, args).await,
        Command::Sql(args) => sql(&ctx, args).await,
        Command::Serve(args) => serve(&ctx, &cli.data_dir, args).await,
        Command::Demo(args) => crate::demo::run(&ctx, &cli.data_dir, args).await,
        Command::Auth(command) => auth_command(command),
        Command::Worker(args) => {
            crate::cluster::worker(&cli.data_dir, args, crate::context::shutdown_signal()).await
        }
        Command::Crawler(command) => crawler_command(&ctx, command).await,
        Command::Check(args) => check(&ctx, &cli.data_dir, args).await,
        Command::Tables(_) | Command::Describe(_) | Command::Partitions(_) | Command::Crawls(_) => {
            let admin = Admin::Local(Box::new(AdminService::new(ctx.engine.clone())));
            admin_command(admin, &cli.command).await
        }
    }
}

/// `tarn check`: prints what was checked and each problem; fails when there is one.
async fn check(ctx: &Context, data_dir: &std::path::Path, args: &CheckArgs) -> Result<()> {
    let report = tarn_lake::check::check(&ctx.catalog, &ctx.stores).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::Internal(format!("check report to JSON: {e}")))?;
        let _ = writeln!(out, "{json}");
    } else {
        let _ = writeln!(
            out,
            "checked the catalog in {}: {} tables, {} files",
            data_dir.display(),
            report.tables,
            report.files
        );
        for problem in &report.problems {
            let _ = writeln!(out, "problem: {problem}");
        }
    }
    match report.problems.len() {
        0 => Ok(()),
        n => Err(Error::InvalidArgument(format!(
            "the catalog has {n} problem(s), listed above"
        ))),
    }
}

/// `tarn crawler …`.
async fn crawler_command(ctx: &Context, command: &CrawlerCommand) -> Result<()> {
    use tarn_lake::crawler::jobs;
    let catalog = &ctx.catalog;
    let find = |name: &str| {
        let name = name.to_string();
        async move {
            catalog.crawler(&name).await?.ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "crawler '{name}' does not exist; see `tarn crawler list`"
                ))
            })
        }
    };
    match command {
        CrawlerCommand::Create(args) => {
            if let Some(schedule) = &args.schedule {
                jobs::parse_schedule(schedule)?;
            }
            let location = tarn_lake::storage::Location::parse(&args.location)?;
            let crawler = CrawlerDef {
                name: args.name.clone(),
                location: location.to_string(),
                database: args.database.clone(),
                options: tarn_lake::catalog::CrawlerOptions {
                    events_queue: args.events_queue.clone(),
                    ..args.shape.options()
                },
                schedule: args.schedule.clone(),
                created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                last_started_at: None,
            };
            catalog.create_crawler(&crawler).await?;
            let next = jobs::next_run(&crawler)?
                .map(|t| format!(", next run {}", t.to_rfc3339()))
                .unwrap_or_else(|| ", runs on demand".into());
            println!(
                "created crawler {} for {}{next}",
                crawler.name, crawler.location
            );
        }
        CrawlerCommand::Run { name, json } => {
            let crawler = find(name).await?;
            let mut summary = jobs::run(catalog, &ctx.stores, &crawler, chrono::Utc::now()).await?;
            ctx.engine.refresh_after_crawl(&mut summary).await;
            print_summary(&summary, *json)?;
        }
        CrawlerCommand::RunDue { at } => {
            let now = at.unwrap_or_else(chrono::Utc::now);
            let mut outcomes = jobs::run_due(catalog, &ctx.stores, now).await?;
            let mut crawled: Vec<_> = outcomes
                .iter_mut()
                .filter_map(|(_, o)| o.as_mut().ok().map(std::mem::take))
                .collect();
            ctx.engine.refresh_after_crawls(&mut crawled).await;
            let mut refreshed = crawled.into_iter();
            for (_, outcome) in &mut outcomes {
                if let Ok(summary) = outcome
                    && let Some(done) = refreshed.next()
                {
                    *summary = done;
                }
            }
            if outcomes.is_empty() {
                println!("no crawler is due");
            }
            let mut failed = 0;
            for (name, outcome) in outcomes {
                match outcome {
                    Ok(s) => println!(
                        "{name}: +{} ~{} -{} files, {} problems",
                        s.files_added,
                        s.files_changed,
                        s.files_removed,
                        s.problems.len()
                    ),
                    Err(e) => {
                        failed += 1;
                        println!("{name}: failed: {e}");
                    }
                }
            }
            if failed > 0 {
                return Err(Error::Execution(format!("{failed} crawler(s) failed")));
            }
        }
        CrawlerCommand::List => {
            let mut rows = Vec::new();
            for c in catalog.crawlers().await? {
                let next = jobs::next_run(&c)?
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "on demand".into());
                rows.push(vec![
                    c.name.clone(),
                    c.location.clone(),
                    c.database.clone(),
                    c.schedule.clone().unwrap_or_default(),
                    c.last_started_at.clone().unwrap_or_default(),
                    next,
                ]);
            }
            print_table(
                &[
                    "crawler", "location", "database", "schedule", "last run", "next run",
                ],
                rows,
            );
        }
        CrawlerCommand::History { name, limit } => {
            find(name).await?;
            let crawls = catalog
                .crawl_history_of(Some(name), i64::from(*limit))
                .await?;
            let rows = crawls
                .into_iter()
                .map(|c| {
                    let summary = summary_line(c.summary);
                    vec![c.id.to_string(), c.started_at, c.status, summary]
                })
                .collect();
            print_table(&["id", "started", "status", "summary"], rows);
        }
        CrawlerCommand::Drop { name } => {
            if !catalog.drop_crawler(name).await? {
                return Err(Error::InvalidArgument(format!(
                    "crawler '{name}' does not exist"
                )));
            }
            println!("dropped crawler {name}");
        }
    }
    Ok(())
}

/// The admin API, in this process or on a server.
enum Admin {
    Local(Box<AdminService>),
    Remote(AdminClient),
}

macro_rules! admin_call {
    ($admin:expr, $method:ident, $request:expr) => {
        match $admin {
            Admin::Local(service) => {
                proto::admin_server::Admin::$method(&**service, tonic::Request::new($request))
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(tarn_server::admin::remote_error)
            }
            Admin::Remote(client) => client
                .$method($request)
                .await
                .map(tonic::Response::into_inner)
                .map_err(tarn_server::admin::remote_error),
        }
    };
}

/// Splits `db.table` (or `table`, in `default`).
fn split_table(name: &str) -> (String, String) {
    match name.split_once('.') {
        Some((db, table)) => (db.to_string(), table.to_string()),
        None => (
            tarn_lake::engine::DEFAULT_DATABASE.to_string(),
            name.to_string(),
        ),
    }
}

fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(header.iter().copied());
    for row in rows {
        table.add_row(row);
    }
    println!("{table}");
}

/// `tarn tables | describe | partitions | crawls`, locally or remotely.
async fn admin_command(mut admin: Admin, command: &Command) -> Result<()> {
    match command {
        Command::Tables(args) => {
            let request = proto::ListTablesRequest {
                database: args.database.clone(),
            };
            let response = admin_call!(&mut admin, list_tables, request)?;
            let rows = response
                .tables
                .into_iter()
                .map(|t| {
                    vec![
                        t.database,
                        t.name,
                        t.format,
                        t.location,
                        t.version.to_string(),
                        t.updated_at,
                    ]
                })
                .collect();
            print_table(
                &[
                    "database", "table", "format", "location", "version", "updated",
                ],
                rows,
            );
        }
        Command::Describe(args) => {
            let (database, table) = split_table(&args.table);
            let request = proto::DescribeTableRequest { database, table };
            let d = admin_call!(&mut admin, describe_table, request)?;
            if let Some(t) = &d.table {
                println!("{}.{} ({}) at {}", t.database, t.name, t.format, t.location);
                println!("version {}, updated {}", t.version, t.updated_at);
            }
            if let Some(reason) = &d.deprecated {
                println!("DEPRECATED: {reason}");
            }
            if let Some(v) = d.delta_version {
                println!("Delta version {v} (earlier ones: SHOW HISTORY, VERSION AS OF n)");
            }
            println!(
                "{} partitions, {} files, {:.1} MB, {} rows",
                d.partitions,
                d.files,
                d.bytes as f64 / 1e6,
                d.rows
            );
            let rows = d
                .columns
                .into_iter()
                .map(|c| {
                    vec![
                        c.name,
                        c.data_type,
                        if c.nullable { "yes" } else { "no" }.to_string(),
                        if c.partition { "partition" } else { "" }.to_string(),
                    ]
                })
                .collect();
            print_table(&["column", "type", "nullable", ""], rows);
            let rows = d
                .schema_history
                .into_iter()
                .map(|v| vec![v.version.to_string(), v.created_at, v.schema])
                .collect();
            print_table(&["schema version", "created", "columns"], rows);
        }
        Command::Partitions(args) => {
            let (database, table) = split_table(&args.table);
            let request = proto::ListPartitionsRequest { database, table };
            let p = admin_call!(&mut admin, list_partitions, request)?;
            let mut header: Vec<&str> = p.columns.iter().map(String::as_str).collect();
            header.extend(["files", "bytes", "rows", "location"]);
            let rows = p
                .partitions
                .into_iter()
                .map(|part| {
                    let mut row: Vec<String> = part
                        .values
                        .into_iter()
                        .map(|v| v.value.unwrap_or_else(|| "NULL".into()))
                        .collect();
                    row.extend([
                        part.files.to_string(),
                        part.bytes.to_string(),
                        part.rows.to_string(),
                        part.location,
                    ]);
                    row
                })
                .collect();
            print_table(&header, rows);
        }
        Command::Crawls(args) => {
            let request = proto::CrawlHistoryRequest { limit: args.limit };
            let h = admin_call!(&mut admin, crawl_history, request)?;
            let rows = h
                .crawls
                .into_iter()
                .map(|c| {
                    let summary = summary_line(c.summary_json);
                    vec![
                        c.id.to_string(),
                        c.started_at,
                        c.status,
                        c.database,
                        c.location,
                        summary,
                    ]
                })
                .collect();
            print_table(
                &["id", "started", "status", "database", "location", "summary"],
                rows,
            );
        }
        _ => {}
    }
    Ok(())
}

fn remote_of(args: &RemoteArgs) -> Result<Remote> {
    let tls_ca = match &args.tls_ca {
        Some(path) => Some(std::fs::read(path).map_err(|e| Error::io(path, e))?),
        None => None,
    };
    Ok(Remote {
        url: args.server.clone().unwrap_or_default(),
        token: args.token.clone(),
        user: args.user.clone(),
        password: args.password.clone(),
        tls_ca,
    })
}

/// `tarn crawl --server URL`: the crawl runs on the server.
async fn remote_crawl(args: &CrawlArgs) -> Result<()> {
    let shape = args.shape.options();
    let request = proto::CrawlRequest {
        location: args.location.clone(),
        database: Some(args.database.clone()),
        table: shape.table,
        include: shape.include,
        exclude: shape.exclude,
        partition_types: shape
            .partition_types
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
        max_tables: shape.max_tables.unwrap_or(0) as u32,
        schema_change: shape.schema_change.to_string(),
        deletion: shape.deletion.to_string(),
        sample_rows: shape.sample_rows.unwrap_or(0) as u32,
        table_level: shape.table_level.unwrap_or(0) as u32,
    };
    let response = tarn_server::admin::remote_crawl(&remote_of(&args.remote)?, request).await?;
    let summary: CrawlSummary = serde_json::from_str(&response.summary_json)
        .map_err(|e| Error::Internal(format!("the server's crawl summary: {e}")))?;
    print_summary(&summary, args.json)
}

/// One line for a recorded crawl: its counts, or the stored text (an error) as it is.
fn summary_line(json: Option<String>) -> String {
    json.as_deref()
        .and_then(|j| serde_json::from_str::<CrawlSummary>(j).ok())
        .map(|s| {
            format!(
                "+{} ~{} -{} files, {} problems, {:.2}s",
                s.files_added,
                s.files_changed,
                s.files_removed,
                s.problems.len(),
                s.elapsed_ms as f64 / 1000.0
            )
        })
        .or(json)
        .unwrap_or_default()
}

fn print_summary(summary: &CrawlSummary, json: bool) -> Result<()> {
    if json {
        let json = serde_json::to_string_pretty(summary)
            .map_err(|e| Error::Internal(format!("encoding the crawl summary: {e}")))?;
        println!("{json}");
    } else {
        println!("{summary}");
    }
    Ok(())
}

async fn crawl(ctx: &Context, args: &CrawlArgs) -> Result<()> {
    let options = CrawlOptions {
        footer_concurrency: args.footer_concurrency.max(1),
        ..CrawlOptions::new(&args.database, args.shape.options())
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
    let mut summary = summary?;
    // Rollups over what the crawl changed catch up now, not at their first query.
    ctx.engine.refresh_after_crawl(&mut summary).await;
    print_summary(&summary, args.json)
}

async fn sql(ctx: &Context, args: &SqlArgs) -> Result<()> {
    // Recorded in the query history as the command line's.
    let engine = ctx
        .engine
        .labelled(tarn_lake::engine::history::QueryLabel::new(
            "cli",
            true,
            &args.query,
            "cli",
        ));
    let result = engine.query(&args.query).await;
    if let Err(e) = &result
        && !matches!(
            e,
            Error::Execution(_) | Error::Timeout(_) | Error::ResourceExhausted(_)
        )
    {
        engine.record_failure(e);
    }
    engine.flush_history().await;
    let (schema, batches) = result?;
    let mut out = std::io::stdout().lock();
    write_batches(&mut out, &schema, &batches, args.format)?;
    out.flush().map_err(|e| Error::io("<stdout>", e))
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
    let (listener, addr) = tarn_server::serve::bind(args.listen).await?;
    // Streamed records acknowledged before a restart are back in their buffers before
    // the first request.
    let replayed = ctx
        .engine
        .start_streams(stream_options(data_dir, args)?)
        .await?;
    if replayed > 0 {
        tracing::info!(records = replayed, "stream log replayed");
    }
    // Scheduled crawlers run inside the server.
    let engine = ctx.engine.clone();
    let min_files = args.auto_optimize_min_files;
    let compacting = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::spawn(tarn_lake::crawler::jobs::schedule_loop(
        ctx.catalog.clone(),
        std::sync::Arc::clone(&ctx.stores),
        std::time::Duration::from_secs(args.schedule_check_secs.max(1)),
        move |mut crawled| {
            // Every tick: rollups catch up with changes from scheduled crawls and from
            // crawls and ingests of other processes sharing the catalog; the scheduled
            // crawls report the refreshes that failed. Then crowded partitions are
            // compacted, by one tick at a time.
            let engine = engine.clone();
            let compacting = std::sync::Arc::clone(&compacting);
            tokio::spawn(async move {
                engine.refresh_after_crawls(&mut crawled).await;
                use std::sync::atomic::Ordering;
                if min_files > 0 && !compacting.swap(true, Ordering::SeqCst) {
                    if let Err(e) = engine.auto_optimize(min_files).await {
                        tracing::warn!(error = %e, "automatic compaction failed");
                    }
                    compacting.store(false, Ordering::SeqCst);
                }
            });
        },
    ));
    serve_until_drained(ctx, args, (listener, scheme, addr), options).await
}

/// Where the stream log lives and when buffers are delivered, from `tarn serve`'s flags.
fn stream_options(
    data_dir: &std::path::Path,
    args: &ServeArgs,
) -> Result<tarn_lake::stream::StreamOptions> {
    let positive = |value: f64, flag: &str| {
        if value.is_finite() && value > 0.0 {
            Ok(value)
        } else {
            Err(Error::InvalidArgument(format!(
                "{flag} must be a positive number, not {value}"
            )))
        }
    };
    let megabytes = positive(args.stream_buffer_mb, "--stream-buffer-mb")?;
    let seconds = positive(args.stream_buffer_seconds, "--stream-buffer-seconds")?;
    Ok(tarn_lake::stream::StreamOptions {
        dir: data_dir.join("streams"),
        flush_bytes: (megabytes * 1024.0 * 1024.0) as usize,
        flush_age: std::time::Duration::from_secs_f64(seconds),
        max_bytes: usize::try_from(args.stream_memory_mb.max(1) << 20).unwrap_or(usize::MAX),
    })
}

/// Serves Flight SQL (and the operations listener, if asked for) until SIGTERM or Ctrl-C:
/// then `/readyz` turns unready, the listeners close after --shutdown-delay, and queries
/// still running after --shutdown-grace are cancelled.
async fn serve_until_drained(
    ctx: &Context,
    args: &ServeArgs,
    (listener, scheme, addr): (tokio::net::TcpListener, &str, std::net::SocketAddr),
    options: ServeOptions,
) -> Result<()> {
    use tarn_lake::engine::limits::parse_duration;
    let delay = parse_duration(&args.shutdown_delay)
        .map_err(|e| Error::InvalidArgument(format!("--shutdown-delay: {e}")))?;
    let grace = parse_duration(&args.shutdown_grace)
        .map_err(|e| Error::InvalidArgument(format!("--shutdown-grace: {e}")))?;
    let draining = tarn_server::http::Draining::default();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let closed = move |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    if let Some(http) = args.http_listen {
        let (http_listener, http_addr) = tarn_server::serve::bind(http).await?;
        // SQL over HTTP follows Flight SQL's rule: without authentication, only on loopback
        // (or when the network is declared trusted).
        let retention = parse_duration(&args.http_result_retention)
            .map_err(|e| Error::InvalidArgument(format!("--http-result-retention: {e}")))?;
        let executions = tarn_server::http::Executions::new(&ctx.engine, retention)?;
        let api = (options.auth.enabled() || http.ip().is_loopback() || args.insecure_no_auth)
            .then(|| tarn_server::http::QueryApi {
                auth: std::sync::Arc::clone(&options.auth),
                max_rows: args.http_max_rows,
                executions: Some(executions),
            });
        if api.is_none() {
            tracing::warn!(
                "the HTTP query API is off: {http} is not a loopback address and the server has \
                 no --config (users or tokens); give one, or --insecure-no-auth"
            );
        }
        let router = tarn_server::http::router(ctx.engine.clone(), draining.clone(), api);
        let tls = match &options.tls {
            Some((cert, key)) => Some(tarn_server::tls::server_config(cert, key, "HTTP listener")?),
            None => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        tokio::spawn(tarn_server::http::serve(
            http_listener,
            tls,
            router,
            closed(stopped.clone()),
        ));
        // Before the Flight SQL line, which tells a supervisor the server is up.
        println!("Tarn operations listening on {scheme}://{http_addr}");
    }
    if let Some(pg) = args.pg_listen {
        serve_postgres(ctx, args, pg, &options, closed(stopped.clone())).await?;
    }
    announce_scheme(scheme, addr);
    {
        let draining = draining.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            draining.start();
            tracing::info!(delay = ?delay, "shutting down: not ready for new work");
            tokio::time::sleep(delay).await;
            let _ = stop.send(true);
        });
    }
    let serving = tarn_server::serve::serve_with(
        ctx.engine.clone(),
        listener,
        options,
        closed(stopped.clone()),
    );
    let grace_over = async {
        closed(stopped).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = serving => result,
        () = grace_over => {
            tracing::warn!(grace = ?grace, "shutdown grace period over; cancelling the queries still running");
            Ok(())
        }
    }
}

/// Starts the Postgres listener on `pg`, with Flight SQL's users and certificate.
async fn serve_postgres(
    ctx: &Context,
    args: &ServeArgs,
    pg: std::net::SocketAddr,
    options: &ServeOptions,
    closed: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    if !options.auth.enabled() && !pg.ip().is_loopback() && !args.insecure_no_auth {
        return Err(Error::InvalidArgument(format!(
            "refusing to serve Postgres on {pg} without authentication: give --config with \
             users or tokens, or pass --insecure-no-auth if the network is trusted"
        )));
    }
    let (listener, addr) = tarn_server::serve::bind(pg).await?;
    let listener = tarn_server::pg::PgListener::new(
        &ctx.engine,
        listener,
        tarn_server::pg::PgOptions {
            auth: std::sync::Arc::clone(&options.auth),
            tls: options.tls.clone(),
        },
    )?;
    tokio::spawn(listener.run(closed));
    println!("Tarn Postgres listening on postgres://{addr}/tarn");
    Ok(())
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
