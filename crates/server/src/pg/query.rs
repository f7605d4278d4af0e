//! Statements over the Postgres protocol: the simple query protocol (text, one or more
//! statements) and the extended one (Parse/Bind/Describe/Execute, typed parameters,
//! portals, binary or text results), both through the engine's one lifecycle (admission,
//! time limit, result cache, history with front door `postgres`).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::execution::SendableRecordBatchStream;
use datafusion_postgres::arrow_pg::datatypes::{
    arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type,
};
use datafusion_postgres::pgwire::api::Type;
use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use datafusion_postgres::pgwire::error::PgWireResult;
use datafusion_postgres::pgwire::messages::data::DataRow;
use datafusion_postgres::pgwire::types::format::FormatOptions;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::error::{cancelled, pg_error};
use super::rewrite::{Rewrite, catalog_rewrite};
use super::session::{Reply, Session, Transaction};
use tarn_lake::engine::ddl::Command;
use tarn_lake::engine::history::QueryLabel;
use tarn_lake::engine::{Engine, Statement};
use tarn_lake::error::{Error, Result};

/// A statement parsed for the extended protocol: its text and what it was planned to take
/// and return when parsed.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub sql: String,
    /// The parameters' types as DataFusion inferred them (`None`: unknown).
    pub inferred: Vec<Option<DataType>>,
    /// The rows it returns (`None`: a command answered with a tag).
    pub schema: Option<SchemaRef>,
}

impl Prepared {
    /// The parameters' Postgres types (`unknown` where DataFusion could not tell).
    pub(crate) fn parameter_types(&self) -> PgWireResult<Vec<Type>> {
        self.inferred
            .iter()
            .map(|t| match t {
                Some(t) => into_pg_type(t),
                None => Ok(Type::UNKNOWN),
            })
            .collect()
    }

    /// The columns it returns, in `format`.
    pub(crate) fn fields(&self, format: &Format) -> PgWireResult<Vec<FieldInfo>> {
        match &self.schema {
            Some(schema) => arrow_schema_to_pg_fields(schema, format, None),
            None => Ok(Vec::new()),
        }
    }
}

/// One statement as the client sent it, run for the session.
pub(crate) struct Run<'a> {
    pub session: &'a Session,
    pub address: String,
    pub sql: &'a str,
    pub params: Option<RecordBatch>,
    pub format: &'a Format,
}

impl Run<'_> {
    /// Runs the statement until its rows start (a query's first batch is awaited, so
    /// errors before any row reach the client as errors, not as a cut-off result), or a
    /// `CancelRequest` stops it.
    pub(crate) async fn response(self, cancel: &CancellationToken) -> Result<Response> {
        if let Some(reply) = self.session.answer(self.sql).await? {
            return reply_response(reply);
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => Err(cancelled()),
            response = self.engine_response(cancel) => response,
        }
    }

    async fn engine_response(&self, cancel: &CancellationToken) -> Result<Response> {
        let caller = &self.session.caller;
        let engine = self
            .session
            .engine()
            .labelled(label(self.session, self.sql));
        engine.client_call(&caller.name, &self.address, "postgres");
        // `COPY … TO STDOUT` runs its query like any other, then sends rows as copy data.
        let copy = super::copy::parse(self.sql).inspect_err(|e| engine.record_failure(e))?;
        let sql = copy.as_ref().map_or(self.sql, |c| c.query.as_str());
        let prepared = prepare(&engine, sql, self.params.as_ref())
            .await
            .inspect_err(|e| engine.record_failure(e))?;
        match (prepared, copy) {
            (Statement::Query(df), copy) => {
                let stream = engine.execute(*df).await?;
                match copy {
                    Some(copy) => copy.response(stream, cancel),
                    None => self.rows(stream, cancel).await,
                }
            }
            (Statement::Command(_), Some(_)) => Err(Error::InvalidArgument(
                "COPY takes a query or a table; this statement returns no rows".into(),
            )),
            (Statement::Command(command), None) => self.command(&engine, &command).await,
        }
    }

    /// A Tarn statement (DDL, `INSERT`, `SHOW …`, `REFRESH …`): writes need role admin.
    async fn command(&self, engine: &Engine, command: &Command) -> Result<Response> {
        let rows: Vec<RecordBatch> = self.params.iter().cloned().collect();
        let batch = engine
            .recorded(async {
                if command.is_update() {
                    self.session.caller.require_admin(command.kind())?;
                }
                engine.run_statement(command, &rows).await
            })
            .await?;
        if command.is_update() {
            self.session.wrote();
        }
        if !command.is_update() {
            let stream = Box::pin(
                datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                    batch.schema(),
                    futures::stream::iter([Ok(batch)]),
                ),
            );
            return self.rows(stream, &CancellationToken::new()).await;
        }
        Ok(Response::Execution(match command {
            Command::Insert { .. } => {
                let count = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::UInt64Array>()
                    .map_or(0, |a| a.value(0) as usize);
                Tag::new("INSERT").with_oid(0).with_rows(count)
            }
            _ => Tag::new(&command_tag(self.sql)),
        }))
    }

    /// The rows of `stream`, encoded in the session's formats, stopping with an error
    /// when the statement is cancelled.
    async fn rows(
        &self,
        mut stream: SendableRecordBatchStream,
        cancel: &CancellationToken,
    ) -> Result<Response> {
        let schema = stream.schema();
        let options = Arc::new(FormatOptions::from_client_metadata(
            &self.session.settings(),
        ));
        let fields = Arc::new(
            arrow_schema_to_pg_fields(&schema, self.format, Some(options))
                .map_err(|e| Error::Internal(format!("describing the result: {e}")))?,
        );
        let first = match stream.next().await {
            Some(Err(e)) => return Err(Error::from(e)),
            other => other,
        };
        let batches = futures::stream::iter(first).chain(stream);
        let cancel = cancel.clone();
        let encoded = {
            let fields = Arc::clone(&fields);
            batches
                .take_until(cancel.clone().cancelled_owned())
                .chain(futures::stream::once(async move {
                    // Reached when the batches end or the statement is cancelled.
                    Err(datafusion::error::DataFusionError::External(Box::new(
                        Cancelled(cancel.is_cancelled()),
                    )))
                }))
                .map(
                    move |batch| -> Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send> {
                        match batch {
                            Ok(batch) => match super::encode::decimals_for_wire(batch, &fields) {
                                Ok(batch) => encode_recordbatch(Arc::clone(&fields), batch),
                                Err(e) => Box::new(std::iter::once(Err(pg_error(&e)))),
                            },
                            Err(datafusion::error::DataFusionError::External(e))
                                if matches!(
                                    e.downcast_ref::<Cancelled>(),
                                    Some(Cancelled(false))
                                ) =>
                            {
                                Box::new(std::iter::empty())
                            }
                            Err(e) => {
                                let error = match e {
                                    datafusion::error::DataFusionError::External(e)
                                        if e.downcast_ref::<Cancelled>().is_some() =>
                                    {
                                        cancelled()
                                    }
                                    e => Error::from(e),
                                };
                                Box::new(std::iter::once(Err(pg_error(&error))))
                            }
                        }
                    },
                )
                .flat_map(futures::stream::iter)
        };
        Ok(Response::Query(QueryResponse::new(fields, encoded)))
    }
}

/// The history's label of `sql` run by the session's caller.
fn label(session: &Session, sql: &str) -> QueryLabel {
    let caller = &session.caller;
    QueryLabel::new(
        &caller.name,
        matches!(caller.role, crate::auth::Role::Admin),
        sql,
        "postgres",
    )
    .with_timeout(session.timeout())
}

/// The end of a result: whether it ended because the statement was cancelled.
#[derive(Debug)]
struct Cancelled(bool);

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("canceling statement due to user request")
    }
}

impl std::error::Error for Cancelled {}

/// What a session statement answers, as a Postgres response.
fn reply_response(reply: Reply) -> Result<Response> {
    Ok(match reply {
        Reply::Tag(tag, Transaction::Unchanged) => Response::Execution(Tag::new(tag)),
        Reply::Tag(tag, Transaction::Start) => Response::TransactionStart(Tag::new(tag)),
        Reply::Tag(tag, Transaction::Commit | Transaction::Rollback) => {
            Response::TransactionEnd(Tag::new(tag))
        }
        Reply::Value { name, value } => {
            let fields = Arc::new(
                arrow_schema_to_pg_fields(&show_schema(&name), &Format::UnifiedText, None)
                    .map_err(|e| Error::Internal(format!("describing SHOW: {e}")))?,
            );
            let mut encoder =
                datafusion_postgres::pgwire::api::results::DataRowEncoder::new(Arc::clone(&fields));
            encoder
                .encode_field(&Some(value))
                .map_err(|e| Error::Internal(format!("encoding SHOW: {e}")))?;
            let row = encoder.take_row();
            let mut response = QueryResponse::new(fields, futures::stream::iter([Ok(row)]));
            response.set_command_tag("SHOW");
            Response::Query(response)
        }
    })
}

/// The one column `SHOW name` returns.
pub(crate) fn show_schema(name: &str) -> Schema {
    Schema::new(vec![Field::new(name, DataType::Utf8, false)])
}

/// The command tag of a statement that returns no rows: its leading keywords
/// (`CREATE TABLE`, `DROP MATERIALIZED VIEW`, `REFRESH MATERIALIZED VIEW`, …).
fn command_tag(sql: &str) -> String {
    let words: Vec<String> = sql
        .split_whitespace()
        .take(3)
        .map(|w| w.to_ascii_uppercase())
        .take_while(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
        .collect();
    let objects = [
        "TABLE",
        "DATABASE",
        "SCHEMA",
        "VIEW",
        "MATERIALIZED",
        "EXTERNAL",
    ];
    match words.as_slice() {
        [verb, a, b] if a == "MATERIALIZED" && b == "VIEW" => format!("{verb} {a} {b}"),
        [verb, object, ..] if objects.contains(&object.as_str()) => format!("{verb} {object}"),
        [verb, ..] => verb.clone(),
        [] => "OK".into(),
    }
}

/// Plans `sql` on `engine`. Clients' catalog queries (every table they read is in
/// `pg_catalog` or `information_schema`, e.g. psql's `\d`, SQLAlchemy's reflection) are
/// first rewritten into SQL DataFusion plans (`'t'::regclass`, `ANY(array)`, `pg_catalog.`
/// function names …); other statements are planned as written, since some of those
/// rewrites change answers (a correlated subquery in a select list becomes NULL).
async fn prepare(engine: &Engine, sql: &str, params: Option<&RecordBatch>) -> Result<Statement> {
    match catalog_rewrite(sql) {
        Some(Rewrite::Always(candidates)) => first_that_plans(engine, &candidates, params).await,
        Some(Rewrite::IfNeeded(candidates)) => match engine.prepare(sql, params).await {
            Err(e) if is_planning(&e) => first_that_plans(engine, &candidates, params).await,
            other => other,
        },
        None => engine.prepare(sql, params).await,
    }
}

/// The first of `candidates` that plans, or the first one's error.
async fn first_that_plans(
    engine: &Engine,
    candidates: &[String],
    params: Option<&RecordBatch>,
) -> Result<Statement> {
    let mut first_error = None;
    for sql in candidates {
        match engine.prepare(sql, params).await {
            Err(e) if is_planning(&e) => {
                first_error.get_or_insert(e);
            }
            other => return other,
        }
    }
    Err(first_error.unwrap_or_else(|| Error::Internal("no statement to plan".into())))
}

/// Whether `error` says a statement does not plan (rather than, say, that the server is
/// busy).
fn is_planning(error: &Error) -> bool {
    matches!(
        error,
        Error::Sql(_) | Error::TableNotFound { .. } | Error::Execution(_)
    )
}

/// Plans `sql` for a `Parse`: the types of its parameters and the rows it returns.
pub(crate) async fn describe(session: &Session, sql: &str) -> Result<Prepared> {
    if let Some(name) = session.shows(sql) {
        return Ok(Prepared {
            sql: sql.to_string(),
            inferred: Vec::new(),
            schema: Some(Arc::new(show_schema(&name))),
        });
    }
    if session.is_session_statement(sql) {
        return Ok(Prepared {
            sql: sql.to_string(),
            inferred: Vec::new(),
            schema: None,
        });
    }
    // Labelled, so a statement that fails to plan is in the history as at Execute.
    let engine = session.engine().labelled(label(session, sql));
    let prepared = prepare(&engine, sql, None).await;
    if let Err(e) = &prepared {
        engine.record_failure(e);
    }
    let (inferred, schema) = match prepared? {
        Statement::Query(df) => {
            let types = df
                .logical_plan()
                .get_parameter_types()
                .map_err(Error::from)?;
            let mut ids: Vec<(usize, Option<DataType>)> = types
                .into_iter()
                .filter_map(|(id, t)| Some((id.strip_prefix('$')?.parse().ok()?, t)))
                .collect();
            ids.sort_by_key(|(n, _)| *n);
            let count = ids.last().map_or(0, |(n, _)| *n);
            let mut inferred = vec![None; count];
            for (n, t) in ids {
                inferred[n - 1] = t;
            }
            (inferred, Some(Arc::new(df.schema().as_arrow().clone())))
        }
        Statement::Command(command) if !command.is_update() => (Vec::new(), Some(command.schema())),
        Statement::Command(_) => (Vec::new(), None),
    };
    Ok(Prepared {
        sql: sql.to_string(),
        inferred,
        schema,
    })
}

/// The bound parameters as the one-row batch the engine binds (`None` when there are
/// none).
pub(crate) fn parameter_row(values: ParamValues) -> Result<Option<RecordBatch>> {
    let ParamValues::List(values) = values else {
        return Err(Error::InvalidArgument(
            "named parameters are not supported over the Postgres protocol; use $1, $2, …".into(),
        ));
    };
    if values.is_empty() {
        return Ok(None);
    }
    let mut fields = Vec::with_capacity(values.len());
    let mut columns = Vec::with_capacity(values.len());
    for (i, value) in values.into_iter().enumerate() {
        let array = value.value.to_array().map_err(Error::from)?;
        fields.push(Field::new(
            format!("${}", i + 1),
            array.data_type().clone(),
            true,
        ));
        columns.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map(Some)
        .map_err(|e| Error::InvalidArgument(format!("binding parameters: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_tags() {
        assert_eq!(command_tag("create table db.t (a int)"), "CREATE TABLE");
        assert_eq!(
            command_tag("REFRESH MATERIALIZED VIEW db.v"),
            "REFRESH MATERIALIZED VIEW"
        );
        assert_eq!(command_tag("DROP DATABASE db"), "DROP DATABASE");
        assert_eq!(command_tag("ANALYZE db.t"), "ANALYZE");
    }
}
