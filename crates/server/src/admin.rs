//! The admin gRPC API (`proto/tarn/v1/admin.proto`): crawls, tables, partitions, crawl
//! history and materialized views, served beside Flight SQL on the same port, and the
//! client the CLI uses to reach a remote server (`--server URL`).

use crate::status::OrStatus;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::auth::Authenticator;
use crate::auth::caller;
use tarn_lake::catalog::CrawlerOptions;
use tarn_lake::crawler::{CrawlOptions, CrawlSummary, Crawler};
use tarn_lake::engine::{DEFAULT_DATABASE, Engine};
use tarn_lake::error::{Error, Result};

/// Code generated from `proto/tarn/v1/admin.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("tarn.v1");
}

use proto::admin_server::{Admin, AdminServer};

/// A request's database, or the default one when it names none.
fn non_empty_or_default(database: String) -> String {
    if database.is_empty() {
        DEFAULT_DATABASE.to_string()
    } else {
        database
    }
}

/// The admin service over an engine.
#[derive(Debug, Clone)]
pub struct AdminService {
    engine: Engine,
}

impl AdminService {
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }

    /// The gRPC server for this service, authenticating every call with `auth`.
    pub fn server(
        self,
        auth: Arc<Authenticator>,
    ) -> tonic::service::interceptor::InterceptedService<
        AdminServer<AdminService>,
        impl tonic::service::Interceptor + Clone,
    > {
        AdminServer::with_interceptor(self, move |mut request: Request<()>| {
            let header = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let caller = auth
                .authenticate(header.as_deref())
                .map_err(crate::status::status)?;
            request.extensions_mut().insert(caller);
            Ok(request)
        })
    }

    /// The engine with `database` (when given) as the default for unqualified names.
    async fn in_database(&self, database: &str) -> std::result::Result<Engine, Status> {
        if database.is_empty() {
            Ok(self.engine.clone())
        } else {
            Ok(self.engine.in_database(database).await.or_status()?)
        }
    }

    async fn table(
        &self,
        database: &str,
        table: &str,
    ) -> std::result::Result<tarn_lake::catalog::TableEntry, Status> {
        let database = if database.is_empty() {
            DEFAULT_DATABASE
        } else {
            database
        };
        self.engine
            .catalog()
            .table(database, table)
            .await
            .map_err(Error::from)
            .or_status()?
            .ok_or_else(|| {
                crate::status::status(Error::TableNotFound {
                    name: format!("{database}.{table}"),
                })
            })
    }
}

fn table_summary(t: &tarn_lake::catalog::TableEntry) -> proto::TableSummary {
    proto::TableSummary {
        database: t.database.clone(),
        name: t.name.clone(),
        location: t.location.clone(),
        format: t.format.to_string(),
        version: t.version,
        updated_at: t.updated_at.clone(),
        table_type: "TABLE".into(),
        view_query: String::new(),
    }
}

fn view_summary(v: &tarn_lake::catalog::ViewRecord) -> proto::TableSummary {
    proto::TableSummary {
        database: v.definition.database.clone(),
        name: v.definition.name.clone(),
        format: "view".into(),
        updated_at: v.updated_at.clone(),
        table_type: "VIEW".into(),
        view_query: v.definition.query.clone(),
        ..Default::default()
    }
}

/// The wire form of a crawl summary.
fn crawl_response(summary: &CrawlSummary) -> proto::CrawlResponse {
    proto::CrawlResponse {
        location: summary.location.clone(),
        database: summary.database.clone(),
        tables_created: summary.tables_created.clone(),
        tables_updated: summary.tables_updated.clone(),
        tables_unchanged: summary.tables_unchanged.clone(),
        files_added: summary.files_added,
        files_changed: summary.files_changed,
        files_removed: summary.files_removed,
        files_unchanged: summary.files_unchanged,
        partitions_added: summary.partitions_added,
        partitions_removed: summary.partitions_removed,
        problems: summary
            .problems
            .iter()
            .map(|p| proto::Problem {
                path: p.path.clone(),
                message: p.message.clone(),
            })
            .collect(),
        elapsed_ms: summary.elapsed_ms,
        summary_json: serde_json::to_string(summary).unwrap_or_default(),
    }
}

impl AdminService {
    /// Crawls as a `Crawl` request asks (the caller is checked).
    async fn crawl_now(&self, r: proto::CrawlRequest) -> Result<CrawlSummary> {
        // The same rule as SQL DDL: only locations the server is configured for.
        let location = self.engine.check_allowed(&r.location)?;
        let partition_types = r
            .partition_types
            .iter()
            .map(|(k, v)| {
                v.parse()
                    .map(|t| (k.clone(), t))
                    .map_err(|e: String| Error::InvalidArgument(format!("partition '{k}': {e}")))
            })
            .collect::<Result<_>>()?;
        let kept = CrawlerOptions {
            table: r.table.filter(|t| !t.is_empty()),
            include: r.include,
            exclude: r.exclude,
            partition_types,
            max_tables: (r.max_tables > 0).then_some(r.max_tables as usize),
            schema_change: if r.schema_change.is_empty() {
                Default::default()
            } else {
                r.schema_change.parse().map_err(Error::InvalidArgument)?
            },
            sample_rows: (r.sample_rows > 0).then_some(r.sample_rows as usize),
            table_level: (r.table_level > 0).then_some(r.table_level as usize),
            // A crawl through the admin API is a plain crawl; event mode is a crawler's.
            events_queue: None,
            deletion: if r.deletion.is_empty() {
                Default::default()
            } else {
                r.deletion.parse().map_err(Error::InvalidArgument)?
            },
        };
        let database = r
            .database
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| DEFAULT_DATABASE.to_string());
        let options = CrawlOptions::new(&database, kept);
        let crawler = Crawler::new(
            self.engine.catalog().clone(),
            Arc::clone(self.engine.stores()),
        );
        let mut summary = crawler.crawl(&location.to_string(), &options).await?;
        self.engine.refresh().await?;
        self.engine.refresh_after_crawl(&mut summary).await;
        Ok(summary)
    }
}

/// The query-history label of an admin call by `who`, described as `sql`.
fn admin_label(who: &crate::auth::Caller, sql: &str) -> tarn_lake::engine::history::QueryLabel {
    tarn_lake::engine::history::QueryLabel::new(
        &who.name,
        matches!(who.role, crate::auth::Role::Admin),
        sql,
        "admin",
    )
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn crawl(
        &self,
        request: Request<proto::CrawlRequest>,
    ) -> std::result::Result<Response<proto::CrawlResponse>, Status> {
        let who = caller(&request);
        let r = request.into_inner();
        let into = r
            .database
            .as_deref()
            .filter(|d| !d.is_empty())
            .unwrap_or(DEFAULT_DATABASE);
        let engine = self.engine.labelled(admin_label(
            &who,
            &format!("CRAWL '{}' INTO {into}", r.location),
        ));
        let summary = engine
            .recorded(async {
                who.require_admin("crawling")?;
                self.crawl_now(r).await
            })
            .await
            .or_status()?;
        Ok(Response::new(crawl_response(&summary)))
    }

    async fn list_databases(
        &self,
        _request: Request<proto::ListDatabasesRequest>,
    ) -> std::result::Result<Response<proto::ListDatabasesResponse>, Status> {
        let databases = self
            .engine
            .catalog()
            .databases()
            .await
            .map_err(Error::from)
            .or_status()?
            .into_iter()
            .map(|d| d.name)
            .collect();
        Ok(Response::new(proto::ListDatabasesResponse { databases }))
    }

    async fn list_tables(
        &self,
        request: Request<proto::ListTablesRequest>,
    ) -> std::result::Result<Response<proto::ListTablesResponse>, Status> {
        let database = request.into_inner().database.filter(|d| !d.is_empty());
        let catalog = self.engine.catalog();
        let views = catalog.views().await.map_err(Error::from).or_status()?;
        let tables = catalog
            .tables()
            .await
            .map_err(Error::from)
            .or_status()?
            .iter()
            .filter(|t| database.as_ref().is_none_or(|d| &t.database == d))
            .map(table_summary)
            .chain(
                views
                    .iter()
                    .filter(|v| {
                        database
                            .as_ref()
                            .is_none_or(|d| &v.definition.database == d)
                    })
                    .map(view_summary),
            )
            .collect();
        Ok(Response::new(proto::ListTablesResponse { tables }))
    }

    async fn describe_table(
        &self,
        request: Request<proto::DescribeTableRequest>,
    ) -> std::result::Result<Response<proto::DescribeTableResponse>, Status> {
        let r = request.into_inner();
        let table = self.table(&r.database, &r.table).await?;
        let catalog = self.engine.catalog();
        let partitions = catalog
            .partitions(table.id)
            .await
            .map_err(Error::from)
            .or_status()?;
        let history = catalog
            .schema_history(table.id)
            .await
            .map_err(Error::from)
            .or_status()?;
        // A Delta table's partition columns and size are those of its catalogued version.
        let properties = catalog
            .table_properties(table.id)
            .await
            .map_err(Error::from)
            .or_status()?;
        let mut partition_names: Vec<&str> = table
            .partition_columns
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        let (files, bytes) = match &properties.format_state {
            Some(tarn_lake::catalog::FormatState::Delta {
                partition_columns,
                files,
                bytes,
                ..
            }) => {
                partition_names.extend(partition_columns.iter().map(String::as_str));
                (*files as i64, *bytes as i64)
            }
            _ => (
                partitions.iter().map(|p| p.file_count).sum(),
                partitions.iter().map(|p| p.total_bytes).sum(),
            ),
        };
        let columns = table
            .table_schema()
            .fields()
            .iter()
            .map(|f| proto::Column {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
                nullable: f.is_nullable(),
                partition: partition_names.contains(&f.name().as_str()),
            })
            .collect();
        Ok(Response::new(proto::DescribeTableResponse {
            table: Some(table_summary(&table)),
            columns,
            partitions: partitions.len() as i64,
            files,
            bytes,
            delta_version: properties.delta_version(),
            deprecated: properties.deprecated.clone(),
            rows: partitions.iter().map(|p| p.row_count).sum(),
            schema_history: history
                .into_iter()
                .map(|(version, schema, created_at)| proto::SchemaVersion {
                    version,
                    created_at,
                    schema,
                })
                .collect(),
        }))
    }

    async fn list_partitions(
        &self,
        request: Request<proto::ListPartitionsRequest>,
    ) -> std::result::Result<Response<proto::ListPartitionsResponse>, Status> {
        let r = request.into_inner();
        let table = self.table(&r.database, &r.table).await?;
        let partitions = self
            .engine
            .catalog()
            .partitions(table.id)
            .await
            .map_err(Error::from)
            .or_status()?
            .into_iter()
            .map(|p| proto::Partition {
                values: p
                    .values
                    .into_iter()
                    .map(|value| proto::PartitionValue { value })
                    .collect(),
                location: p.location,
                files: p.file_count,
                bytes: p.total_bytes,
                rows: p.row_count,
            })
            .collect();
        Ok(Response::new(proto::ListPartitionsResponse {
            columns: table
                .partition_columns
                .iter()
                .map(|c| c.name.clone())
                .collect(),
            partitions,
        }))
    }

    async fn list_views(
        &self,
        _request: Request<proto::ListViewsRequest>,
    ) -> std::result::Result<Response<proto::ListViewsResponse>, Status> {
        let views = self
            .engine
            .rollup_summaries()
            .await
            .or_status()?
            .into_iter()
            .map(|v| proto::View {
                name: v.name,
                base_table: v.base_table,
                rows: v.rows.unwrap_or_default(),
                bytes: v.bytes.unwrap_or_default(),
                partitions: v.partitions.unwrap_or_default(),
                stale_partitions: v.stale_partitions.unwrap_or_default(),
                refreshed_at: v.refreshed_at.unwrap_or_default(),
                definition: v.definition,
                last_error: v.last_error.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(proto::ListViewsResponse { views }))
    }

    async fn create_view(
        &self,
        request: Request<proto::CreateViewRequest>,
    ) -> std::result::Result<Response<proto::CreateViewResponse>, Status> {
        let who = caller(&request);
        let r = request.into_inner();
        let engine = self
            .in_database(&r.database)
            .await?
            .labelled(admin_label(&who, &r.sql));
        let result = engine
            .recorded(async {
                who.require_admin("CREATE MATERIALIZED VIEW")?;
                let command = match engine.prepare(&r.sql, None).await? {
                    tarn_lake::engine::Statement::Command(
                        c @ tarn_lake::engine::ddl::Command::CreateMaterializedView { .. },
                    ) => c,
                    _ => {
                        return Err(Error::InvalidArgument(
                            "CreateView takes a CREATE MATERIALIZED VIEW statement".into(),
                        ));
                    }
                };
                engine.run_command(&command).await
            })
            .await
            .or_status()?;
        let message = result
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .map(|a| a.value(0).to_string())
            .unwrap_or_default();
        Ok(Response::new(proto::CreateViewResponse { message }))
    }

    async fn refresh_view(
        &self,
        request: Request<proto::RefreshViewRequest>,
    ) -> std::result::Result<Response<proto::RefreshViewResponse>, Status> {
        let who = caller(&request);
        let r = request.into_inner();
        let database = non_empty_or_default(r.database);
        let full = if r.full { " FULL" } else { "" };
        let engine = self.engine.labelled(admin_label(
            &who,
            &format!("REFRESH MATERIALIZED VIEW {database}.{}{full}", r.name),
        ));
        let report = engine
            .recorded(async {
                who.require_admin("REFRESH MATERIALIZED VIEW")?;
                engine.refresh_rollup(&database, &r.name, r.full).await
            })
            .await
            .or_status()?;
        Ok(Response::new(proto::RefreshViewResponse {
            refreshed: report.refreshed as i64,
            removed: report.removed as i64,
            unchanged: report.unchanged as i64,
            rows: report.rows as i64,
        }))
    }

    async fn drop_view(
        &self,
        request: Request<proto::DropViewRequest>,
    ) -> std::result::Result<Response<proto::DropViewResponse>, Status> {
        let who = caller(&request);
        let r = request.into_inner();
        let database = non_empty_or_default(r.database);
        let engine = self.engine.labelled(admin_label(
            &who,
            &format!("DROP MATERIALIZED VIEW {database}.{}", r.name),
        ));
        let dropped = engine
            .recorded(async {
                who.require_admin("DROP MATERIALIZED VIEW")?;
                engine.drop_rollup(&database, &r.name).await
            })
            .await
            .or_status()?;
        if !dropped && !r.if_exists {
            return Err(Status::not_found(format!(
                "materialized view '{database}.{}' does not exist",
                r.name
            )));
        }
        Ok(Response::new(proto::DropViewResponse { dropped }))
    }

    async fn crawl_history(
        &self,
        request: Request<proto::CrawlHistoryRequest>,
    ) -> std::result::Result<Response<proto::CrawlHistoryResponse>, Status> {
        let limit = match request.into_inner().limit {
            0 => 20,
            n => i64::from(n),
        };
        let crawls = self
            .engine
            .catalog()
            .crawl_history(limit)
            .await
            .map_err(Error::from)
            .or_status()?
            .into_iter()
            .map(|c| proto::CrawlRecord {
                id: c.id,
                location: c.location,
                database: c.database,
                started_at: c.started_at,
                finished_at: c.finished_at,
                status: c.status,
                summary_json: c.summary,
            })
            .collect();
        Ok(Response::new(proto::CrawlHistoryResponse { crawls }))
    }
}

/// How the CLI reaches a remote server's admin API.
#[derive(Debug, Clone, Default)]
pub struct Remote {
    /// `grpc://host:port` or `grpc+tls://host:port`.
    pub url: String,
    /// Sent as `authorization: Bearer …` (an API token or a token from a login).
    pub token: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// PEM CA certificate that signed the server's certificate (TLS).
    pub tls_ca: Option<Vec<u8>>,
}

/// A connected admin client that adds the credentials to every call.
pub type AdminClient = proto::admin_client::AdminClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, AuthHeader>,
>;

/// Adds the `authorization` header.
#[derive(Debug, Clone)]
pub struct AuthHeader(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for AuthHeader {
    fn call(&mut self, mut request: Request<()>) -> std::result::Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl Remote {
    /// Connects to the server's admin API.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed URL or credentials, or when the server
    /// cannot be reached.
    pub async fn connect(&self) -> Result<AdminClient> {
        use base64::Engine as _;
        let (tls, rest) = if let Some(rest) = self.url.strip_prefix("grpc+tls://") {
            (true, rest)
        } else if let Some(rest) = self.url.strip_prefix("grpc://") {
            (false, rest)
        } else {
            return Err(Error::InvalidArgument(format!(
                "server URL '{}' must start with grpc:// or grpc+tls://",
                self.url
            )));
        };
        let endpoint_url = format!("{}://{rest}", if tls { "https" } else { "http" });
        let mut endpoint = tonic::transport::Endpoint::from_shared(endpoint_url)
            .map_err(|e| Error::InvalidArgument(format!("server URL '{}': {e}", self.url)))?;
        if tls {
            crate::tls::use_ring_for_tls();
            let mut config = tonic::transport::ClientTlsConfig::new().with_enabled_roots();
            if let Some(ca) = &self.tls_ca {
                config = config.ca_certificate(tonic::transport::Certificate::from_pem(ca));
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| Error::InvalidArgument(format!("TLS: {e}")))?;
        }
        let channel = endpoint.connect().await.map_err(|e| {
            Error::Unavailable(format!(
                "cannot reach Tarn at {}: {e}; check the address and that the server runs",
                self.url
            ))
        })?;
        let header = match (&self.token, &self.user) {
            (Some(token), _) => Some(format!("Bearer {token}")),
            (None, Some(user)) => {
                let password = self.password.clone().unwrap_or_default();
                let basic =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                Some(format!("Basic {basic}"))
            }
            (None, None) => None,
        };
        let header = header
            .map(|h| {
                h.parse().map_err(|_| {
                    Error::InvalidArgument("credentials are not a valid header value".into())
                })
            })
            .transpose()?;
        Ok(proto::admin_client::AdminClient::with_interceptor(
            channel,
            AuthHeader(header),
        ))
    }
}

/// Turns a gRPC status from the admin API into a Tarn error with its message.
pub fn remote_error(status: Status) -> Error {
    let message = status.message().to_string();
    match status.code() {
        tonic::Code::Unauthenticated => {
            Error::Unauthenticated(message.trim_start_matches("unauthenticated: ").to_string())
        }
        tonic::Code::PermissionDenied => Error::PermissionDenied(
            message
                .trim_start_matches("permission denied: ")
                .to_string(),
        ),
        tonic::Code::NotFound => Error::NotFound(message),
        tonic::Code::AlreadyExists => Error::AlreadyExists(message),
        tonic::Code::InvalidArgument => Error::InvalidArgument(message),
        tonic::Code::Unavailable => Error::Unavailable(format!("remote server: {message}")),
        tonic::Code::ResourceExhausted => Error::ResourceExhausted(message),
        tonic::Code::DeadlineExceeded => Error::Timeout(message),
        _ => Error::Execution(format!("remote server: {message}")),
    }
}

/// Runs a crawl on a remote server and returns its summary (as the server reports it).
///
/// # Errors
/// As [`Remote::connect`], and the server's error for the crawl.
pub async fn remote_crawl(
    remote: &Remote,
    request: proto::CrawlRequest,
) -> Result<proto::CrawlResponse> {
    let mut client = remote.connect().await?;
    client
        .crawl(request)
        .await
        .map(Response::into_inner)
        .map_err(remote_error)
}
