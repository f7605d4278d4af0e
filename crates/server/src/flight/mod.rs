//! The Arrow Flight SQL service.
//!
//! Queries are stateless: `GetFlightInfo` plans the statement (so errors surface there, with
//! the result schema) and returns a ticket that carries the statement itself; `DoGet`
//! plans it again and streams the result. Prepared statements work the same way, with
//! bound parameters carried in the handle (see [`handle`]).
//!
//! Every result crosses the wire in one canonical shape (see [`wire_schema`]): view types
//! become `Utf8`/`Binary`, dictionaries are hydrated, every field is nullable and carries no
//! metadata. The schema advertised by `GetFlightInfo` and the one `DoGet` sends are the same
//! by construction, which is what JDBC and ADBC check.

pub mod cancel;
pub mod handle;
pub mod info;
pub mod service;
pub mod session;
mod stream;

use std::pin::Pin;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{GetCatalogsBuilder, GetDbSchemasBuilder, GetTablesBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetCrossReference,
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementIngest,
    CommandStatementQuery, CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt,
    SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use datafusion::datasource::TableType;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Authenticator, Caller, Signer, caller};
use handle::{
    StatementHandle, TicketContent, decode_ticket, encode_result, rewrite_question_marks,
};
use tarn_lake::engine::ddl::Command;
use tarn_lake::engine::settings::Settings;
use tarn_lake::engine::{CATALOG_NAME, Engine, Statement};
use tarn_lake::error::{Error, Result};
use tarn_lake::ingest::{IngestMode, IngestRequest};

/// Largest gRPC message accepted (parameter batches, ingest): 64 MiB.
pub(crate) const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

type FlightDataStream =
    Pin<Box<dyn Stream<Item = std::result::Result<arrow_flight::FlightData, Status>> + Send>>;

/// Tarn's Flight SQL service.
#[derive(Debug, Clone)]
pub struct TarnFlightSql {
    engine: Engine,
    auth: Arc<Authenticator>,
}

impl TarnFlightSql {
    /// A service without authentication (every caller may do everything).
    pub fn new(engine: Engine) -> Self {
        Self::with_auth(engine, Arc::new(Authenticator::disabled(Signer::random())))
    }

    /// A service that checks callers with `auth` and signs handles with its secret.
    pub fn with_auth(engine: Engine, auth: Arc<Authenticator>) -> Self {
        Self { engine, auth }
    }

    /// Signs a ticket or handle, so that only what this server (or one sharing its
    /// secret) issued is accepted back.
    fn seal(&self, bytes: bytes::Bytes) -> bytes::Bytes {
        bytes::Bytes::from(self.auth.signer().seal(&bytes))
    }

    fn open<'a>(&self, sealed: &'a [u8]) -> Result<&'a [u8]> {
        self.auth.signer().open(sealed).ok_or_else(|| {
            Error::InvalidArgument(
                "this ticket or statement handle was not issued by this server (or was \
                 altered); run or prepare the statement again"
                    .into(),
            )
        })
    }

    pub(crate) fn open_handle(&self, sealed: &[u8]) -> Result<StatementHandle> {
        StatementHandle::decode(self.open(sealed)?)
    }

    fn open_ticket(&self, sealed: &[u8]) -> Result<TicketContent> {
        decode_ticket(self.open(sealed)?)
    }

    /// The engine for a statement: with the database the client chose as default.
    /// (Statements are labelled with their caller and text for the query history.)
    /// The session's settings apply first; a database the request names wins over the
    /// session's `schema`.
    async fn engine_for(&self, database: Option<&str>, settings: &Settings) -> Result<Engine> {
        let engine = self.engine.with_settings(settings)?;
        match database {
            Some(db) => engine.in_database(db).await,
            None => Ok(engine),
        }
    }

    /// Plans the statement in `handle` (first parameter row bound, if any) for
    /// `GetFlightInfo`: a query or `SHOW` gets its wire schema and a ticket that runs it;
    /// a DDL statement runs now, and its ticket carries the result.
    async fn flight_plan(
        &self,
        handle: &StatementHandle,
        caller: &Caller,
        session: &session::Session,
    ) -> Result<(SchemaRef, bytes::Bytes)> {
        let sql = rewrite_question_marks(&handle.sql);
        let rows = handle.param_rows();
        let engine = self
            .engine_for(handle.database.as_deref(), &handle.settings)
            .await?
            .labelled(label(caller, &handle.sql));
        let prepared = engine.prepare(&sql, rows.first()).await;
        if let Err(e) = &prepared {
            engine.record_failure(e);
        }
        match prepared? {
            // `SET`, `RESET`, `USE` and `SHOW` run now: the session's new settings go back
            // to the client in its cookie, and the ticket carries the answer.
            Statement::Command(Command::Session(command)) => {
                let mut settings = handle.settings.clone();
                let batch = engine
                    .recorded(engine.run_session_command(&command, &mut settings))
                    .await?;
                if settings != handle.settings {
                    session.change(settings);
                }
                Ok((
                    wire_schema(&batch.schema()),
                    self.seal(encode_result(&[batch])?),
                ))
            }
            Statement::Query(df) => {
                // The ticket runs on a catalog at least as new as the one it was planned on.
                let mut ticket = handle.clone();
                ticket.generation = Some(engine.generation());
                Ok((
                    wire_schema(df.schema().as_arrow()),
                    self.seal(ticket.encode()?),
                ))
            }
            Statement::Command(command) if command.is_update() => {
                let batch = engine
                    .recorded(async {
                        caller.require_admin(command.kind())?;
                        engine.run_statement(&command, &rows).await
                    })
                    .await?;
                Ok((
                    wire_schema(&batch.schema()),
                    self.seal(encode_result(&[batch])?),
                ))
            }
            Statement::Command(command) => {
                Ok((wire_schema(&command.schema()), self.seal(handle.encode()?)))
            }
        }
    }

    /// Runs a DDL statement for the update paths (JDBC's `executeUpdate`, ADBC's
    /// `execute_update`); returns the affected row count, 0 for DDL as JDBC expects.
    async fn update(
        &self,
        sql: &str,
        database: Option<&str>,
        caller: &Caller,
        rows: &[RecordBatch],
        session: &session::Session,
    ) -> Result<i64> {
        let engine = self
            .engine_for(database, &session.options.settings)
            .await?
            .labelled(label(caller, sql));
        let prepared = engine
            .prepare(&rewrite_question_marks(sql), rows.first())
            .await;
        if let Err(e) = &prepared {
            engine.record_failure(e);
        }
        match prepared? {
            Statement::Command(Command::Session(command)) => {
                let mut settings = session.options.settings.clone();
                engine
                    .recorded(engine.run_session_command(&command, &mut settings))
                    .await?;
                if settings != session.options.settings {
                    session.change(settings);
                }
                Ok(0)
            }
            Statement::Command(command) if command.is_update() => {
                let result = engine
                    .recorded(async {
                        caller.require_admin(command.kind())?;
                        engine.run_statement(&command, rows).await
                    })
                    .await?;
                // An INSERT reports the rows it wrote; DDL reports 0, as JDBC expects.
                Ok(match command {
                    Command::Insert { .. } => result
                        .column(0)
                        .as_any()
                        .downcast_ref::<arrow::array::UInt64Array>()
                        .map(|a| a.value(0) as i64)
                        .unwrap_or(0),
                    _ => 0,
                })
            }
            _ => Err(Error::InvalidArgument(
                "this statement returns rows; run it as a query, not as an update".into(),
            )),
        }
    }

    /// Streams what a ticket holds: a computed result, or the statement run once per bound
    /// parameter row (once when none are bound), in the wire schema.
    async fn execute(&self, ticket: TicketContent, caller: &Caller) -> Result<FlightDataStream> {
        let handle = match ticket {
            TicketContent::Result(batches) => {
                let schema = batches
                    .first()
                    .map(|b| wire_schema(&b.schema()))
                    .ok_or_else(|| Error::InvalidArgument("empty result ticket".into()))?;
                let target = Arc::clone(&schema);
                let stream = futures::stream::iter(batches)
                    .map(move |b| to_wire_batch(&b, &target).map_err(status_error));
                return Ok(encode(schema, stream));
            }
            TicketContent::Statement(handle) => handle,
        };
        let sql = rewrite_question_marks(&handle.sql);
        let rows = handle.param_rows();
        let engine = self
            .engine_for(handle.database.as_deref(), &handle.settings)
            .await?
            .labelled(label(caller, &handle.sql));
        let mut streams = Vec::new();
        let mut schema: Option<SchemaRef> = None;
        let runs: Vec<Option<&RecordBatch>> = if rows.is_empty() {
            vec![None]
        } else {
            rows.iter().map(Some).collect()
        };
        for row in runs {
            let prepared = engine.prepare_at(&sql, row, handle.generation).await;
            if let Err(e) = &prepared {
                engine.record_failure(e);
            }
            let (this, stream) = match prepared? {
                Statement::Query(df) => {
                    let this = wire_schema(df.schema().as_arrow());
                    (this, engine.execute(*df).await?)
                }
                Statement::Command(command) => {
                    let batch = engine
                        .recorded(async {
                            if command.is_update() {
                                caller.require_admin(command.kind())?;
                            }
                            engine.run_command(&command).await
                        })
                        .await?;
                    let this = wire_schema(&batch.schema());
                    let stream: datafusion::execution::SendableRecordBatchStream =
                        Box::pin(RecordBatchStreamAdapter::new(
                            batch.schema(),
                            futures::stream::iter([Ok(batch)]),
                        ));
                    (this, stream)
                }
            };
            match &schema {
                Some(s) if s != &this => {
                    return Err(Error::InvalidArgument(
                        "parameter rows give results of different types; bind values of \
                         one type per parameter"
                            .into(),
                    ));
                }
                Some(_) => {}
                None => schema = Some(Arc::clone(&this)),
            }
            streams.push(stream);
        }
        let schema = schema.ok_or_else(|| Error::Internal("no statement was run".into()))?;
        let target = Arc::clone(&schema);
        let batches = futures::stream::iter(streams).flatten().map(move |batch| {
            let batch = batch.map_err(|e| status_error(Error::from(e)))?;
            to_wire_batch(&batch, &target).map_err(status_error)
        });
        Ok(encode(schema, batches))
    }

    fn info_for(
        &self,
        schema: &Schema,
        ticket: Ticket,
        descriptor: FlightDescriptor,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(format!("encoding schema: {e}")))?
            .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
            .with_descriptor(descriptor)
            .with_total_records(-1)
            .with_total_bytes(-1);
        Ok(Response::new(info))
    }

    /// A session view of the catalog (databases and tables) for the metadata commands.
    async fn objects(&self) -> Result<Vec<(String, String, TableType, SchemaRef)>> {
        let ctx = self.engine.session(None).await?;
        let mut out = Vec::new();
        let Some(catalog) = ctx.catalog(CATALOG_NAME) else {
            return Ok(out);
        };
        // Catalog tables come from the snapshot: listing them must not load every table's
        // file list, and one damaged table must not hide the others.
        for table in self.engine.tables() {
            let schema = wire_schema(&table.table_schema());
            out.push((table.database, table.name, TableType::Base, schema));
        }
        // Materialized views, queryable by name.
        for state in self.engine.rollup_states() {
            if let Some(view) = &state.view {
                let schema = wire_schema(&view.schema());
                let def = &state.def;
                out.push((
                    def.database.clone(),
                    def.name.clone(),
                    TableType::View,
                    schema,
                ));
            }
        }
        // Views (CREATE VIEW) that plan on this catalog.
        for (database, name, view) in self.engine.readable_views() {
            out.push((database, name, TableType::View, wire_schema(&view.schema())));
        }
        // DataFusion's own views (information_schema) are cheap to describe.
        let tarn_databases = self.engine.databases();
        for db in catalog.schema_names() {
            if tarn_databases.contains(&db) {
                continue;
            }
            let Some(schema) = catalog.schema(&db) else {
                continue;
            };
            for name in schema.table_names() {
                match schema.table(&name).await {
                    Ok(Some(table)) => {
                        let wire = wire_schema(&table.schema());
                        out.push((db.clone(), name, table.table_type(), wire));
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(%db, %name, error = %e, "table left out of GetTables"),
                }
            }
        }
        Ok(out)
    }
}

/// A ticket for a metadata command: the command itself.
fn command_ticket(message: impl ProstMessageExt) -> Ticket {
    Ticket::new(message.as_any().encode_to_vec())
}

fn status_error(e: Error) -> FlightError {
    FlightError::Tonic(Box::new(crate::status::status(e)))
}

fn encode(
    schema: SchemaRef,
    batches: impl Stream<Item = std::result::Result<RecordBatch, FlightError>> + Send + 'static,
) -> FlightDataStream {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(Status::from);
    Box::pin(stream)
}

fn one_batch(batch: RecordBatch) -> FlightDataStream {
    let schema = batch.schema();
    encode(schema, futures::stream::iter([Ok(batch)]))
}

fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Error::Internal(format!("encoding schema: {e}")))?;
    Ok(bytes)
}

/// The wire form of a result schema: views become `Utf8`/`Binary`, dictionaries become
/// their values, every field is nullable, and no metadata is kept.
pub fn wire_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| wire_field(f))
            .collect::<Vec<FieldRef>>(),
    ))
}

fn wire_field(field: &Field) -> FieldRef {
    Arc::new(Field::new(field.name(), wire_type(field.data_type()), true))
}

fn wire_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::Dictionary(_, value) => wire_type(value),
        DataType::List(f) => DataType::List(wire_field(f)),
        DataType::ListView(f) => DataType::List(wire_field(f)),
        DataType::LargeList(f) => DataType::LargeList(wire_field(f)),
        DataType::LargeListView(f) => DataType::LargeList(wire_field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(wire_field(f), *n),
        DataType::Struct(fields) => {
            DataType::Struct(fields.iter().map(|f| wire_field(f)).collect::<Fields>())
        }
        other => other.clone(),
    }
}

/// Casts `batch` into `schema` (its wire schema).
pub fn to_wire_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                arrow::compute::cast(column, field.data_type()).map_err(Error::from)
            }
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &options,
    )?)
}

/// A failure building a metadata result: a bug, not a user error.
fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("building a metadata result: {e}"))
}

/// The default database a request asks for, from its `database` (or `schema`) header:
/// ADBC sends `adbc.flight.sql.rpc.call_header.database`, and JDBC sends unknown URL
/// properties (`…?database=web`) as headers.
pub(crate) fn requested_database<T>(request: &Request<T>) -> Option<String> {
    ["database", "schema"]
        .iter()
        .find_map(|key| {
            let value = request.metadata().get(*key)?.to_str().ok()?.trim();
            (!value.is_empty()).then(|| value.to_string())
        })
        .or_else(|| {
            // The session's `schema` option (SetSessionOptions, USE), when no header names
            // one.
            session_settings(request).get("schema").map(str::to_string)
        })
}

fn flight_status(e: Error) -> Status {
    crate::status::status(e)
}

#[tonic::async_trait]
impl FlightSqlService for TarnFlightSql {
    type FlightService = TarnFlightSql;

    async fn do_handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> std::result::Result<
        Response<
            Pin<Box<dyn Stream<Item = std::result::Result<HandshakeResponse, Status>> + Send>>,
        >,
        Status,
    > {
        // No authentication yet: every handshake succeeds with an empty token.
        let response = HandshakeResponse {
            protocol_version: 0,
            payload: Default::default(),
        };
        let stream = futures::stream::iter([Ok(response)]);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let mut handle = StatementHandle::new(query.query);
        handle.database = requested_database(&request);
        handle.settings = session_settings(&request);
        let (schema, statement_handle) = self
            .flight_plan(&handle, &caller(&request), &session(&request))
            .await
            .map_err(flight_status)?;
        let ticket = TicketStatementQuery { statement_handle };
        self.info_for(&schema, command_ticket(ticket), request.into_inner())
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let mut handle = self
            .open_handle(&query.prepared_statement_handle)
            .map_err(flight_status)?;
        if handle.database.is_none() {
            handle.database = requested_database(&request);
        }
        handle.settings = session_settings(&request);
        let (schema, statement_handle) = self
            .flight_plan(&handle, &caller(&request), &session(&request))
            .await
            .map_err(flight_status)?;
        let ticket = TicketStatementQuery { statement_handle };
        self.info_for(&schema, command_ticket(ticket), request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<FlightDataStream>, Status> {
        let content = self
            .open_ticket(&ticket.statement_handle)
            .map_err(flight_status)?;
        Ok(Response::new(
            self.execute(content, &caller(&request))
                .await
                .map_err(flight_status)?,
        ))
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<FlightDataStream>, Status> {
        let content = self
            .open_ticket(&query.prepared_statement_handle)
            .map_err(flight_status)?;
        Ok(Response::new(
            self.execute(content, &caller(&request))
                .await
                .map_err(flight_status)?,
        ))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> std::result::Result<ActionCreatePreparedStatementResult, Status> {
        let sql = rewrite_question_marks(&query.query);
        let database = requested_database(&request);
        let engine = self
            .engine_for(database.as_deref(), &session_settings(&request))
            .await
            .map_err(flight_status)?
            .labelled(label(&caller(&request), &query.query));
        let prepared = engine.prepare(&sql, None).await;
        if let Err(e) = &prepared {
            // The statement never reaches GetFlightInfo: this is where it fails.
            engine.record_failure(e);
        }
        let prepared = prepared.map_err(flight_status)?;
        let (dataset, params) = match prepared {
            Statement::Query(df) => {
                let types = df
                    .logical_plan()
                    .get_parameter_types()
                    .map_err(|e| flight_status(Error::from(e)))?;
                let mut names: Vec<&String> = types.keys().collect();
                names.sort_by_key(|n| (n.len(), n.to_string()));
                let params = Schema::new(
                    names
                        .into_iter()
                        .map(|n| {
                            let t = types.get(n).cloned().flatten().unwrap_or(DataType::Null);
                            Field::new(n.as_str(), wire_type(&t), true)
                        })
                        .collect::<Vec<_>>(),
                );
                (wire_schema(df.schema().as_arrow()), params)
            }
            // An empty dataset schema marks an update: JDBC then sends DoPut
            // CommandPreparedStatementUpdate.
            Statement::Command(c) if c.is_update() => (Arc::new(Schema::empty()), Schema::empty()),
            Statement::Command(c) => (wire_schema(&c.schema()), Schema::empty()),
        };
        let mut handle = StatementHandle::new(query.query);
        handle.database = database;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: self.seal(handle.encode().map_err(flight_status)?),
            dataset_schema: schema_bytes(&dataset).map_err(flight_status)?,
            parameter_schema: schema_bytes(&params).map_err(flight_status)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> std::result::Result<(), Status> {
        // Handles are stateless: nothing to release.
        Ok(())
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> std::result::Result<DoPutPreparedStatementResult, Status> {
        let mut handle = self
            .open_handle(&query.prepared_statement_handle)
            .map_err(flight_status)?;
        let settings = session_settings(&request);
        let stream = request.into_inner().map_err(FlightError::from);
        let params: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(stream)
            .try_collect()
            .await
            .map_err(|e| Status::invalid_argument(format!("reading bound parameters: {e}")))?;
        handle.params = params.into_iter().filter(|b| b.num_rows() > 0).collect();
        // Validate now, so a bad binding fails at bind time rather than at DoGet.
        let sql = rewrite_question_marks(&handle.sql);
        let rows = handle.param_rows();
        self.engine_for(handle.database.as_deref(), &settings)
            .await
            .map_err(flight_status)?
            .prepare(&sql, rows.first())
            .await
            .map_err(flight_status)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(self.seal(handle.encode().map_err(flight_status)?)),
        })
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.info_for(&schema, command_ticket(query), request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<FlightDataStream>, Status> {
        let mut builder: GetCatalogsBuilder = query.into_builder();
        builder.append(CATALOG_NAME);
        let batch = builder.build().map_err(internal)?;
        Ok(Response::new(one_batch(batch)))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.info_for(&schema, command_ticket(query), request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<FlightDataStream>, Status> {
        let ctx = self.engine.session(None).await.map_err(flight_status)?;
        let mut builder: GetDbSchemasBuilder = query.into_builder();
        if let Some(catalog) = ctx.catalog(CATALOG_NAME) {
            let mut names = catalog.schema_names();
            names.sort();
            for db in names {
                builder.append(CATALOG_NAME, db);
            }
        }
        let batch = builder.build().map_err(internal)?;
        Ok(Response::new(one_batch(batch)))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.info_for(&schema, command_ticket(query), request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<FlightDataStream>, Status> {
        let mut objects = self.objects().await.map_err(flight_status)?;
        objects.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let mut builder: GetTablesBuilder = query.into_builder();
        for (db, name, kind, schema) in objects {
            builder
                .append(CATALOG_NAME, db, name, table_type_name(kind), &schema)
                .map_err(internal)?;
        }
        let batch = builder.build().map_err(internal)?;
        Ok(Response::new(one_batch(batch)))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.info_for(&schema, command_ticket(query), request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<FlightDataStream>, Status> {
        let mut builder = query.into_builder();
        for kind in ["TABLE", "VIEW"] {
            builder.append(kind);
        }
        let batch = builder.build().map_err(internal)?;
        Ok(Response::new(one_batch(batch)))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let schema = info::SQL_INFO.schema();
        self.info_for(&schema, command_ticket(query), request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<FlightDataStream>, Status> {
        let batch = info::SQL_INFO.record_batch(query.info).map_err(internal)?;
        Ok(Response::new(one_batch(batch)))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let schema = info::XDBC_INFO.schema();
        self.info_for(&schema, command_ticket(query), request.into_inner())
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<FlightDataStream>, Status> {
        let batch = info::XDBC_INFO
            .record_batch(query.data_type)
            .map_err(internal)?;
        Ok(Response::new(one_batch(batch)))
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        self.info_for(
            &primary_keys_schema(),
            command_ticket(query),
            request.into_inner(),
        )
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<FlightDataStream>, Status> {
        // Lake tables declare no keys.
        Ok(Response::new(one_batch(RecordBatch::new_empty(
            primary_keys_schema(),
        ))))
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        self.info_for(
            &foreign_keys_schema(),
            command_ticket(query),
            request.into_inner(),
        )
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<FlightDataStream>, Status> {
        Ok(Response::new(one_batch(RecordBatch::new_empty(
            foreign_keys_schema(),
        ))))
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        self.info_for(
            &foreign_keys_schema(),
            command_ticket(query),
            request.into_inner(),
        )
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<FlightDataStream>, Status> {
        Ok(Response::new(one_batch(RecordBatch::new_empty(
            foreign_keys_schema(),
        ))))
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        self.info_for(
            &foreign_keys_schema(),
            command_ticket(query),
            request.into_inner(),
        )
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        _request: Request<Ticket>,
    ) -> std::result::Result<Response<FlightDataStream>, Status> {
        Ok(Response::new(one_batch(RecordBatch::new_empty(
            foreign_keys_schema(),
        ))))
    }

    async fn do_put_fallback(
        &self,
        request: Request<PeekableFlightDataStream>,
        message: Any,
    ) -> std::result::Result<
        Response<<Self as arrow_flight::flight_service_server::FlightService>::DoPutStream>,
        Status,
    > {
        // A path descriptor (no command) names a table to stream into.
        if message.type_url.is_empty() && message.value.is_empty() {
            return stream::do_put_stream(&self.engine, request).await;
        }
        Err(Status::unimplemented(format!(
            "DoPut with command {} is not supported",
            message.type_url
        )))
    }

    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> std::result::Result<i64, Status> {
        let database = requested_database(&request);
        self.update(
            &command.query,
            database.as_deref(),
            &caller(&request),
            &[],
            &session(&request),
        )
        .await
        .map_err(flight_status)
    }

    async fn do_put_statement_ingest(
        &self,
        command: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> std::result::Result<i64, Status> {
        use arrow_flight::sql::{TableExistsOption, TableNotExistOption};
        caller(&request)
            .require_admin("ingest")
            .map_err(flight_status)?;
        if command.temporary {
            return Err(Status::invalid_argument(
                "Tarn has no temporary tables; ingest into a catalog table instead",
            ));
        }
        if command.transaction_id.is_some() {
            return Err(Status::invalid_argument(
                "Tarn has no transactions; ingest without a transaction id",
            ));
        }
        let options = command.table_definition_options.unwrap_or_default();
        let if_exists = TableExistsOption::try_from(options.if_exists)
            .unwrap_or(TableExistsOption::Unspecified);
        let if_not_exist = TableNotExistOption::try_from(options.if_not_exist)
            .unwrap_or(TableNotExistOption::Unspecified);
        // Unspecified options take the Flight SQL defaults: fail if the table exists,
        // fail if it does not.
        let mode = match (if_not_exist, if_exists) {
            (TableNotExistOption::Create, TableExistsOption::Append) => IngestMode::CreateAppend,
            (TableNotExistOption::Create, TableExistsOption::Replace) => IngestMode::Replace,
            (TableNotExistOption::Create, _) => IngestMode::Create,
            (_, TableExistsOption::Append) => IngestMode::Append,
            (_, TableExistsOption::Replace) => {
                return Err(Status::invalid_argument(
                    "ingest with replace-if-exists but fail-if-missing is not supported; use \
                     mode replace (create or replace)",
                ));
            }
            (_, _) => {
                return Err(Status::invalid_argument(
                    "ingest that fails both when the table exists and when it does not can \
                     never succeed; choose a mode: create, append, replace or create_append",
                ));
            }
        };
        let database = command
            .schema
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| requested_database(&request));
        if let Some(catalog) = command.catalog.as_deref()
            && !catalog.is_empty()
            && catalog != CATALOG_NAME
        {
            return Err(Status::not_found(format!(
                "catalog '{catalog}' does not exist; Tarn has one catalog, '{CATALOG_NAME}'"
            )));
        }
        let ingest_request = IngestRequest {
            database,
            table: command.table.clone(),
            mode,
            layout: Default::default(),
        };
        let stream = request.into_inner().map_err(FlightError::from);
        let batches = FlightRecordBatchStream::new_from_flight_data(stream)
            .map_err(|e| Error::InvalidArgument(format!("reading the ingested rows: {e}")));
        let rows = self
            .engine
            .ingest(&ingest_request, batches)
            .await
            .map_err(flight_status)?;
        i64::try_from(rows).map_err(internal)
    }

    async fn do_put_prepared_statement_update(
        &self,
        command: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> std::result::Result<i64, Status> {
        let mut handle = self
            .open_handle(&command.prepared_statement_handle)
            .map_err(flight_status)?;
        let database = handle
            .database
            .clone()
            .or_else(|| requested_database(&request));
        let caller = caller(&request);
        let session = session(&request);
        // Parameters come with the update (ADBC's executemany, JDBC batches), or were bound
        // to the handle before.
        // The first message may carry only the descriptor (no IPC header): skip such.
        let stream = request
            .into_inner()
            .try_filter(|data| futures::future::ready(!data.data_header.is_empty()))
            .map_err(FlightError::from);
        let sent: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(stream)
            .try_collect()
            .await
            .map_err(|e| Status::invalid_argument(format!("reading bound parameters: {e}")))?;
        if sent.iter().any(|b| b.num_rows() > 0) {
            handle.params = sent.into_iter().filter(|b| b.num_rows() > 0).collect();
        }
        let rows = handle.param_rows();
        self.update(&handle.sql, database.as_deref(), &caller, &rows, &session)
            .await
            .map_err(flight_status)
    }

    async fn do_get_fallback(
        &self,
        _request: Request<Ticket>,
        message: Any,
    ) -> std::result::Result<Response<FlightDataStream>, Status> {
        Err(Status::unimplemented(format!(
            "Tarn does not support the Flight SQL command {}",
            message.type_url
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

fn table_type_name(kind: TableType) -> &'static str {
    match kind {
        TableType::Base => "TABLE",
        TableType::View => "VIEW",
        TableType::Temporary => "LOCAL TEMPORARY",
    }
}

/// The `CommandGetPrimaryKeys` result schema, from the Flight SQL specification.
fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// The exported/imported keys and cross-reference result schema, from the specification.
fn foreign_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("pk_catalog_name", DataType::Utf8, true),
        Field::new("pk_db_schema_name", DataType::Utf8, true),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        Field::new("fk_catalog_name", DataType::Utf8, true),
        Field::new("fk_db_schema_name", DataType::Utf8, true),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("fk_key_name", DataType::Utf8, true),
        Field::new("pk_key_name", DataType::Utf8, true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

/// What the query history records of a statement's caller and text.
fn label(caller: &Caller, sql: &str) -> tarn_lake::engine::history::QueryLabel {
    tarn_lake::engine::history::QueryLabel::new(
        &caller.name,
        matches!(caller.role, crate::auth::Role::Admin),
        sql,
        "flight",
    )
}

/// The request's session (its cookie's options), recorded by the service's `authorize`.
pub(crate) fn session<T>(request: &Request<T>) -> session::Session {
    request
        .extensions()
        .get::<session::Session>()
        .cloned()
        .unwrap_or_default()
}

/// The settings of the request's session.
pub(crate) fn session_settings<T>(request: &Request<T>) -> Settings {
    request
        .extensions()
        .get::<session::Session>()
        .map(|s| s.options.settings.clone())
        .unwrap_or_default()
}
