//! Command-line and environment configuration.
//!
//! Every flag can also be set through a `TARN_*` environment variable; a flag given on the
//! command line wins over the environment, which wins over the default.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Tarn: crawl a Parquet lake into a catalog, query it with SQL, serve it over Flight SQL.
#[derive(Debug, Parser)]
#[command(name = "tarn", version, about, long_about = None)]
pub struct Cli {
    /// Directory holding the catalog database and Tarn's own files.
    #[arg(
        long,
        global = true,
        env = "TARN_DATA_DIR",
        default_value = "./tarn-data"
    )]
    pub data_dir: PathBuf,

    /// Where the catalog lives: a `postgres://user:password@host:port/database` URL for a
    /// catalog several front ends share; by default SQLite in the data directory.
    #[arg(long, global = true, env = "TARN_CATALOG")]
    pub catalog: Option<String>,

    /// Log filter (e.g. `info`, `tarn=debug`); logs go to stderr.
    #[arg(long, global = true, env = "TARN_LOG", default_value = "warn")]
    pub log: String,

    /// How log lines are written: `text` for people, `json` (one object a line, a
    /// statement's lines carrying its `query_id` and user) for a log collector.
    #[arg(
        long,
        global = true,
        env = "TARN_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// A DataFusion setting as KEY=VALUE (repeatable), e.g.
    /// `execution.target_partitions=4`.
    #[arg(long = "datafusion-config", global = true, env = "TARN_DATAFUSION_CONFIG",
          value_delimiter = ',', value_parser = parse_key_value)]
    pub datafusion_config: Vec<(String, String)>,

    /// A location (path or URL prefix, e.g. `/data/lake` or `s3://bucket/`) under which
    /// SQL may create tables (repeatable; the data directory is always allowed). Without
    /// it, `CREATE EXTERNAL TABLE` cannot reach other server files.
    #[arg(
        long = "allow-location",
        global = true,
        env = "TARN_ALLOW_LOCATIONS",
        value_delimiter = ','
    )]
    pub allow_locations: Vec<String>,

    /// Where Tarn writes tables it creates itself (bulk ingest): a path or URL such as
    /// `s3://bucket/warehouse`. Defaults to `warehouse/` in the data directory.
    #[arg(long, global = true, env = "TARN_WAREHOUSE")]
    pub warehouse: Option<String>,

    /// Answer queries from their base tables only, never from materialized views (rollups
    /// are still kept up to date). For comparisons and troubleshooting.
    /// (`TARN_NO_ROLLUP_REWRITE` takes `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off`.)
    #[arg(long, global = true, env = "TARN_NO_ROLLUP_REWRITE",
          value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub no_rollup_rewrite: bool,

    /// Days the query history (`system.queries`) keeps statements (0: no history).
    #[arg(
        long,
        global = true,
        env = "TARN_HISTORY_RETENTION_DAYS",
        default_value_t = 45
    )]
    pub history_retention_days: u32,

    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Tarn's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a sample lake, crawl it, show dashboard queries, and serve it.
    Demo(DemoArgs),
    /// Crawl a location (a path, file:// or s3:// URL) into the catalog.
    Crawl(CrawlArgs),
    /// Serve the catalog over Arrow Flight SQL.
    Serve(Box<ServeArgs>),
    /// Run parts of distributed queries for coordinators (`serve --workers`); needs no
    /// catalog, reads the lake with the same store settings as the coordinator.
    Worker(WorkerArgs),
    /// Run one SQL statement and print its result.
    Sql(SqlArgs),
    /// Define, run and inspect crawlers (named, scheduled crawls kept in the catalog).
    #[command(subcommand)]
    Crawler(CrawlerCommand),
    /// List the catalog's tables.
    Tables(TablesArgs),
    /// Show a table: location, columns, size and schema history.
    Describe(TableArgs),
    /// List a table's partitions with their files, bytes and rows.
    Partitions(TableArgs),
    /// Show the most recent crawls and their summaries.
    Crawls(CrawlsArgs),
    /// Check the catalog (after a crash, a killed process, a full disk): the database's
    /// integrity, Tarn's invariants, and that every catalogued file exists with its size.
    /// Exits non-zero when a problem is found.
    Check(CheckArgs),
    /// Make password hashes and API tokens for the config file.
    #[command(subcommand)]
    Auth(AuthCommand),
}

impl Command {
    /// The server settings of a command that serves (`serve`, `demo`).
    pub fn server_limits(&self) -> Option<&LimitArgs> {
        match self {
            Command::Serve(args) => Some(&args.limits),
            Command::Demo(args) => Some(&args.limits),
            _ => None,
        }
    }
}

/// The cluster's shared token (coordinator and workers).
#[derive(Debug, Clone, Args)]
pub struct ClusterTokenArg {
    /// Shared secret between coordinator and workers: workers refuse calls without it.
    /// Needed when a worker listens beyond loopback.
    #[arg(long, env = "TARN_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,
}

/// `tarn worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Address to listen on for coordinators; port 0 picks a free port (printed).
    #[arg(long, env = "TARN_WORKER_LISTEN", default_value = "127.0.0.1:50061")]
    pub listen: SocketAddr,

    /// Memory the tasks' operators share (bytes, `4GiB` or `60%`); past it they spill to
    /// --spill-dir.
    #[arg(long, env = "TARN_MEMORY_LIMIT", default_value = "60%")]
    pub memory_limit: String,

    /// Where tasks spill; defaults to `spill/` in the data directory.
    #[arg(long, env = "TARN_SPILL_DIR")]
    pub spill_dir: Option<PathBuf>,

    #[command(flatten)]
    pub token: ClusterTokenArg,

    /// Listen beyond loopback without a cluster token (refused otherwise: the worker runs
    /// any plan it is sent).
    #[arg(long)]
    pub insecure_no_auth: bool,
}

/// A coordinator's workers (`serve --workers`).
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Workers to spread large queries over: `host:port,host:port`, `dns:NAME:PORT` (every
    /// address the name resolves to) or `file:PATH` (one address a line); resolved again
    /// every second, and workers that do not answer are left out until they do.
    #[arg(long, env = "TARN_WORKERS")]
    pub workers: Option<String>,

    /// A query is spread over the workers when the files its scans read hold at least this
    /// much (by the catalog's sizes): bytes or a unit (`256MiB`); smaller ones run here.
    #[arg(long, env = "TARN_DISTRIBUTE_MIN_BYTES", default_value = "256MiB")]
    pub distribute_min_bytes: String,

    /// Bytes of files per scan partition on a worker (the unit of work distributed scans
    /// are split into).
    #[arg(
        long,
        env = "TARN_DISTRIBUTE_BYTES_PER_PARTITION",
        default_value = "16MiB"
    )]
    pub distribute_bytes_per_partition: String,

    #[command(flatten)]
    pub token: ClusterTokenArg,
}

/// `tarn crawl`.
#[derive(Debug, Args)]
pub struct CrawlArgs {
    /// The location to crawl: a directory, `file:///…` or `s3://bucket/prefix`.
    pub location: String,
    /// Database to register the tables in (created if missing).
    #[arg(long, env = "TARN_DATABASE", default_value = "default")]
    pub database: String,
    /// Parquet footers read concurrently.
    #[arg(long, env = "TARN_FOOTER_CONCURRENCY", default_value_t = tarn_lake::crawler::DEFAULT_FOOTER_CONCURRENCY)]
    pub footer_concurrency: usize,
    #[command(flatten)]
    pub shape: CrawlShapeArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

fn parse_partition_type(s: &str) -> Result<(String, tarn_lake::catalog::PartitionType), String> {
    let (k, v) = parse_key_value(s)?;
    Ok((k, v.parse()?))
}

/// `tarn serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the chosen address is printed).
    #[arg(long, env = "TARN_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Config file (TOML) with the users, roles and API tokens; with it, every call must
    /// authenticate. See the README's "Authentication" section.
    #[arg(long, env = "TARN_CONFIG")]
    pub config: Option<PathBuf>,

    /// Secret that signs bearer tokens and statement handles; nodes sharing it accept each
    /// other's. Created on first use. Defaults to `secret.key` in the data directory.
    #[arg(long, env = "TARN_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,

    /// PEM certificate chain: serve TLS (with --tls-key).
    #[arg(long, env = "TARN_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "TARN_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// How often the server checks for scheduled crawlers that are due, in seconds.
    #[arg(long, env = "TARN_SCHEDULE_CHECK_SECS", default_value_t = 15)]
    pub schedule_check_secs: u64,

    /// Compact automatically: at each scheduler check, a partition of a Parquet table that
    /// holds at least this many files under OPTIMIZE's target size is rewritten as
    /// `OPTIMIZE` would (0: off, the default, as it rewrites and later deletes files that
    /// other writers put in the lake).
    #[arg(long, env = "TARN_AUTO_OPTIMIZE_MIN_FILES", default_value_t = 0)]
    pub auto_optimize_min_files: u64,

    /// Streams: a table's buffered records are delivered to the lake once they hold this
    /// many megabytes (Firehose's default: 5).
    #[arg(long, env = "TARN_STREAM_BUFFER_MB", default_value_t = 5.0)]
    pub stream_buffer_mb: f64,

    /// Streams: ... or once the oldest buffered record is this many seconds old
    /// (Firehose's default: 300).
    #[arg(long, env = "TARN_STREAM_BUFFER_SECONDS", default_value_t = 300.0)]
    pub stream_buffer_seconds: f64,

    /// Streams: megabytes of buffered records held at most, all tables together; writers
    /// beyond it are told to retry (RESOURCE_EXHAUSTED, HTTP 429 with Retry-After).
    #[arg(long, env = "TARN_STREAM_MEMORY_MB", default_value_t = 512)]
    pub stream_memory_mb: u64,

    /// Serve without authentication on a non-loopback address (refused otherwise).
    #[arg(long)]
    pub insecure_no_auth: bool,

    /// Address of the HTTP listener for operations: `/metrics` (Prometheus), `/healthz`,
    /// `/readyz` (off unless given).
    #[arg(long, env = "TARN_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,

    /// Address of the Postgres wire protocol listener, for psql, BI tools (Grafana,
    /// Metabase, Superset) and Postgres drivers (off unless given). Database `tarn`; its
    /// schemas are Tarn's databases. With --config, users log in with their password or an
    /// API token; off loopback that needs --tls-cert.
    #[arg(long, env = "TARN_PG_LISTEN")]
    pub pg_listen: Option<SocketAddr>,

    /// The most rows one request to the HTTP query API may ask for (`max_rows`); larger
    /// results page with LIMIT/OFFSET or go through Flight SQL.
    #[arg(long, env = "TARN_HTTP_MAX_ROWS", default_value_t = 1_000_000)]
    pub http_max_rows: usize,

    /// How long the results of asynchronous executions (`POST /v1/queries`) are kept in
    /// the warehouse (`_query_results/`) before they are removed, e.g. `1d`, `12h`.
    #[arg(long, env = "TARN_HTTP_RESULT_RETENTION", default_value = "1d")]
    pub http_result_retention: String,

    /// On SIGTERM, how long `/readyz` says "draining" before the listeners close (so a
    /// load balancer stops sending new work first), e.g. `5s`.
    #[arg(long, env = "TARN_SHUTDOWN_DELAY", default_value = "0s")]
    pub shutdown_delay: String,

    /// After the listeners close, how long running queries may finish before they are
    /// cancelled and the process exits.
    #[arg(long, env = "TARN_SHUTDOWN_GRACE", default_value = "30s")]
    pub shutdown_grace: String,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// What a server (`serve`, `demo`) may take: memory, places and time for queries, and
/// the memory of its result cache and in-memory views.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Memory every query's operators share: bytes, a unit (`4GiB`) or a share of the
    /// machine's or container's memory (`60%`). Sorts, aggregations and joins spill to
    /// --spill-dir past their share; a query that still cannot fit fails alone with
    /// RESOURCE_EXHAUSTED. The result cache and in-memory views have their own budgets.
    #[arg(long, env = "TARN_MEMORY_LIMIT", default_value = "60%")]
    pub memory_limit: String,

    /// Where queries spill to disk; emptied at start. Defaults to `spill/` in the data
    /// directory.
    #[arg(long, env = "TARN_SPILL_DIR")]
    pub spill_dir: Option<PathBuf>,

    /// Queries that read tables running at once; more wait in a FIFO queue (0: no
    /// limit). Defaults to twice the number of cores, at least 4.
    #[arg(long, env = "TARN_MAX_CONCURRENT_QUERIES")]
    pub max_concurrent_queries: Option<usize>,

    /// Queries waiting for a place; past it a query is refused at once with
    /// RESOURCE_EXHAUSTED "too many queries".
    #[arg(long, env = "TARN_MAX_QUEUED_QUERIES", default_value_t = 100)]
    pub max_queued_queries: usize,

    /// How long a query may wait for a place (`30s`, `2m`) before it is refused.
    #[arg(long, env = "TARN_QUEUE_TIMEOUT", default_value = "2m")]
    pub queue_timeout: String,

    /// How long a query may run once admitted (`30m`, `90s`; `0`: no limit); past it the
    /// query is cancelled and its client told so.
    #[arg(long, env = "TARN_QUERY_TIMEOUT", default_value = "30m")]
    pub query_timeout: String,

    /// Megabytes of memory materialized views' rows are kept in,
    /// so dashboard queries read no files; views beyond it are read from their files.
    #[arg(long, env = "TARN_ROLLUP_MEMORY_MB",
          default_value_t = tarn_lake::rollup::MEMORY_BUDGET_MB)]
    pub rollup_memory_mb: usize,

    /// Megabytes of memory query results are kept in, so a
    /// repeated query over unchanged tables is answered without running it (0: off).
    #[arg(long, env = "TARN_RESULT_CACHE_MB", default_value_t = 256)]
    pub result_cache_mb: usize,
}

impl LimitArgs {
    /// The engine's memory pool and query limits; `data_dir` holds the default spill
    /// directory, which is emptied here.
    ///
    /// # Errors
    /// [`tarn_lake::error::Error::InvalidArgument`] for a malformed size or duration;
    /// [`tarn_lake::error::Error::Io`] when the spill directory cannot be prepared.
    pub fn resolve(
        &self,
        data_dir: &std::path::Path,
    ) -> tarn_lake::error::Result<(
        tarn_lake::engine::limits::MemoryLimit,
        tarn_lake::engine::limits::QueryLimits,
    )> {
        use tarn_lake::engine::limits::{QueryLimits, parse_duration};
        use tarn_lake::error::Error;
        let memory = memory_limit(&self.memory_limit, self.spill_dir.as_deref(), data_dir)?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let max_concurrent = match self.max_concurrent_queries {
            Some(0) => None,
            Some(n) => Some(n),
            None => Some((2 * cores).max(4)),
        };
        let queue_timeout = parse_duration(&self.queue_timeout)
            .map_err(|e| Error::InvalidArgument(format!("--queue-timeout: {e}")))?;
        let query_timeout = parse_duration(&self.query_timeout)
            .map_err(|e| Error::InvalidArgument(format!("--query-timeout: {e}")))?;
        Ok((
            memory,
            QueryLimits {
                max_concurrent,
                max_queued: self.max_queued_queries,
                queue_timeout,
                query_timeout: (!query_timeout.is_zero()).then_some(query_timeout),
            },
        ))
    }
}

/// The memory pool of `--memory-limit` (`text`) and where it spills: `spill_dir`, or
/// `spill/` in `data_dir` (emptied here).
///
/// # Errors
/// [`tarn_lake::error::Error::InvalidArgument`] for a malformed size;
/// [`tarn_lake::error::Error::Io`] when the spill directory cannot be prepared.
pub fn memory_limit(
    text: &str,
    spill_dir: Option<&std::path::Path>,
    data_dir: &std::path::Path,
) -> tarn_lake::error::Result<tarn_lake::engine::limits::MemoryLimit> {
    use tarn_lake::engine::limits::{available_memory, own_spill_dir, parse_size};
    let bytes = parse_size(text, available_memory())
        .map_err(|e| tarn_lake::error::Error::InvalidArgument(format!("--memory-limit: {e}")))?;
    let root = spill_dir.map_or_else(|| data_dir.join("spill"), std::path::Path::to_path_buf);
    Ok(tarn_lake::engine::limits::MemoryLimit {
        bytes,
        spill_dir: Some(own_spill_dir(&root)?),
    })
}

/// `tarn crawler …`.
// Parsed once per process, so the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum CrawlerCommand {
    /// Define a crawler: a location, crawl options and an optional cron schedule.
    Create(CrawlerCreateArgs),
    /// Run a crawler now and print its summary.
    Run {
        name: String,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run every scheduled crawler that is due (for an external scheduler; `tarn serve`
    /// runs due crawlers itself).
    RunDue {
        /// Take this instant (RFC 3339) as now: to check what a schedule would run then.
        #[arg(long)]
        at: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// List crawlers with their schedules and next runs.
    List,
    /// A crawler's recent crawls.
    History {
        name: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Forget a crawler (its crawl history stays).
    Drop { name: String },
}

/// How a location is crawled: the options `tarn crawl` and `tarn crawler create` share.
#[derive(Debug, Clone, Args)]
pub struct CrawlShapeArgs {
    /// Register the whole location as one table with this name.
    #[arg(long)]
    pub table: Option<String>,
    /// Declare a partition column's type instead of inferring it, as KEY=TYPE with TYPE
    /// one of int64, date, timestamp, string (repeatable; kept for later crawls).
    #[arg(long = "partition-type", value_parser = parse_partition_type)]
    pub partition_types: Vec<(String, tarn_lake::catalog::PartitionType)>,
    /// Crawl only files matching this glob (relative to the location; `**` crosses
    /// folders). Repeatable.
    #[arg(long)]
    pub include: Vec<String>,
    /// Leave out files matching this glob (relative to the location). Repeatable.
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Refuse the crawl, changing nothing, if it would create more tables than this.
    #[arg(long, env = "TARN_MAX_TABLES")]
    pub max_tables: Option<usize>,
    /// When files change an existing table's columns: `update` applies the change, `log`
    /// keeps the table's columns and reports it, `fail` leaves the table untouched and
    /// reports it.
    #[arg(long, default_value = "update")]
    pub schema_change: tarn_lake::crawler::SchemaChangePolicy,
    /// CSV and JSON files: how many records from the start of each new file its columns
    /// are inferred from (the sample grows to fit them, up to 64 MiB).
    #[arg(long, env = "TARN_SAMPLE_ROWS")]
    pub sample_rows: Option<usize>,
    /// When a table's folder is gone: `mark` keeps the table (no files) marked deprecated
    /// until its folder is back; `delete` drops it from the catalog.
    #[arg(long, default_value = "mark")]
    pub deletion: tarn_lake::crawler::DeletionPolicy,
    /// Glue's table level: every folder this many levels below the location (1: the
    /// location itself, 2: its child folders, …) is one table, whatever its shape.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "table")]
    pub table_level: Option<u32>,
}

impl CrawlShapeArgs {
    /// The options as the catalog keeps them for a crawler.
    pub fn options(&self) -> tarn_lake::catalog::CrawlerOptions {
        tarn_lake::catalog::CrawlerOptions {
            table: self.table.clone(),
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            partition_types: self.partition_types.iter().cloned().collect(),
            max_tables: self.max_tables,
            schema_change: self.schema_change,
            sample_rows: self.sample_rows,
            deletion: self.deletion,
            table_level: self.table_level.map(|l| l as usize),
            events_queue: None,
        }
    }
}

/// `tarn crawler create`.
#[derive(Debug, Args)]
pub struct CrawlerCreateArgs {
    pub name: String,
    /// The location to crawl: a directory, `file:///…` or `s3://bucket/prefix`.
    pub location: String,
    /// Database to register the tables in.
    #[arg(long, default_value = "default")]
    pub database: String,
    /// Cron schedule (5 fields, e.g. `*/15 * * * *`, or `@hourly`); without it the crawler
    /// runs only when asked.
    #[arg(long)]
    pub schedule: Option<String>,
    /// Event mode: the URL of an SQS queue that receives the location's S3 event
    /// notifications. Runs then re-crawl only the tables whose objects the events name
    /// (the first run crawls everything); an empty queue costs one request.
    #[arg(long)]
    pub events_queue: Option<String>,
    #[command(flatten)]
    pub shape: CrawlShapeArgs,
}

/// Where admin commands run: the local catalog, or a remote server's admin API.
#[derive(Debug, Clone, Args, Default)]
pub struct RemoteArgs {
    /// Run on a remote Tarn server (`grpc://host:port` or `grpc+tls://host:port`) through
    /// its admin API instead of on the local catalog.
    #[arg(long, env = "TARN_SERVER")]
    pub server: Option<String>,
    /// Bearer token for --server (an API token).
    #[arg(long, env = "TARN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// User name for --server (with TARN_PASSWORD).
    #[arg(long, env = "TARN_USER")]
    pub user: Option<String>,
    /// Password for --user; prefer the environment variable to the flag.
    #[arg(long, env = "TARN_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// PEM CA certificate that signed the server's TLS certificate.
    #[arg(long, env = "TARN_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

/// `tarn tables`.
#[derive(Debug, Args)]
pub struct TablesArgs {
    /// Only this database's tables.
    #[arg(long)]
    pub database: Option<String>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// `tarn describe` and `tarn partitions`.
#[derive(Debug, Args)]
pub struct TableArgs {
    /// The table, as `name` (in database `default`) or `database.name`.
    pub table: String,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// `tarn crawls`.
#[derive(Debug, Args)]
pub struct CrawlsArgs {
    /// How many of the most recent crawls.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// `tarn check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `tarn auth`: helpers for the config file.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Print the argon2 hash of a password (read from stdin) for a user's `password_hash`.
    HashPassword,
    /// Make a new API token; prints the token (give it to the client) and the `sha256` line
    /// for the config file.
    NewToken,
}

/// Output formats of `tarn sql`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

/// `tarn sql`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The statement to run.
    pub query: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
}

/// `tarn demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address to serve the demo on.
    #[arg(long, env = "TARN_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Address of the web console and HTTP API while the demo serves (loopback only).
    #[arg(long, env = "TARN_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    pub http_listen: SocketAddr,
    /// Generate, crawl and query, then exit instead of serving.
    #[arg(long)]
    pub no_serve: bool,
    /// Number of events to generate.
    #[arg(long, default_value_t = 300_000)]
    pub events: usize,
    #[command(flatten)]
    pub limits: LimitArgs,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got '{s}'"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}
