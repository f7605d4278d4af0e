//! pgwire's query handlers: the simple protocol's `Query` and the extended protocol's
//! `Parse`/`Describe`/`Execute`, both answered by [`super::query::Run`].

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters_with_server_types;
use datafusion_postgres::pgwire;
use futures::{Sink, StreamExt};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;

use super::error::pg_error;
use super::query::{Prepared, Run, describe, parameter_row};
use super::{Door, address_of, session_of};

#[async_trait]
impl SimpleQueryHandler for Door {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session_of(client)?;
        let statements = split(query);
        if statements.is_empty() {
            // Only comments (`-- ping`, how pgx checks a connection).
            return Ok(vec![Response::EmptyQuery]);
        }
        let many = statements.len() > 1;
        let mut responses = Vec::with_capacity(statements.len());
        for sql in &statements {
            let cancel = session.start_statement();
            let run = Run {
                session: &session,
                address: address_of(client),
                sql,
                params: None,
                format: &Format::UnifiedText,
            };
            let response = match run.response(&cancel).await {
                // One statement at a time: the next starts once this one's rows are read,
                // so a script never holds two of the server's places at once.
                Ok(Response::Query(result)) if many => collected(result).await,
                other => other.map_err(|e| pg_error(&e)),
            };
            match response {
                Ok(response) => responses.push(response),
                Err(e) if responses.is_empty() => return Err(e),
                Err(PgWireError::UserError(info)) => {
                    responses.push(Response::Error(info));
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(responses)
    }
}

/// The statements of a simple query: as sent when it is one (what the history shows),
/// one by one when the Postgres parser finds several.
fn split(query: &str) -> Vec<String> {
    let one = || vec![query.trim().trim_end_matches(';').trim().to_string()];
    match Parser::parse_sql(&PostgreSqlDialect {}, query) {
        Ok(statements) if statements.len() != 1 => {
            statements.iter().map(ToString::to_string).collect()
        }
        // Tarn's own statements (`REFRESH …`, `… AS OF …`) are not Postgres': one statement.
        _ => one(),
    }
}

/// `result` read to its end (a failing row fails the statement).
async fn collected(mut result: QueryResponse) -> PgWireResult<Response> {
    let mut rows = Vec::new();
    while let Some(row) = result.data_rows().next().await {
        rows.push(row?);
    }
    let mut done = QueryResponse::new(
        result.row_schema(),
        futures::stream::iter(rows.into_iter().map(Ok)),
    );
    done.set_command_tag(result.command_tag());
    Ok(Response::Query(done))
}

/// The extended protocol's `Parse`: plans the statement on the connection's session.
pub(crate) struct Parsing;

#[async_trait]
impl QueryParser for Parsing {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let session = session_of(client)?;
        if split(sql).is_empty() {
            return Ok(None);
        }
        let sql = sql.trim().trim_end_matches(';').trim();
        describe(&session, sql)
            .await
            .map(Some)
            .map_err(|e| pg_error(&e))
    }

    fn get_parameter_types(&self, statement: &Prepared) -> PgWireResult<Vec<Type>> {
        statement.parameter_types()
    }

    fn get_result_schema(
        &self,
        statement: &Prepared,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        statement.fields(format.unwrap_or(&Format::UnifiedText))
    }
}

#[async_trait]
impl ExtendedQueryHandler for Door {
    type Statement = Prepared;
    type QueryParser = Parsing;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::new(Parsing)
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session_of(client)?;
        let prepared = &portal.statement.statement;
        let inferred: Vec<Option<&DataType>> =
            prepared.inferred.iter().map(Option::as_ref).collect();
        let server_types = prepared.parameter_types()?;
        let server_types: Vec<Option<&Type>> = server_types.iter().map(Some).collect();
        let values = deserialize_parameters_with_server_types(portal, &inferred, &server_types)?;
        let params = parameter_row(values).map_err(|e| pg_error(&e))?;
        let cancel = session.start_statement();
        Run {
            session: &session,
            address: address_of(client),
            sql: &prepared.sql,
            params,
            format: &portal.result_column_format,
        }
        .response(&cancel)
        .await
        .map_err(|e| pg_error(&e))
    }
}
