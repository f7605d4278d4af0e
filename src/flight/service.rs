//! The gRPC face of the Flight SQL service.
//!
//! arrow-flight implements `FlightService` for any `FlightSqlService`, but answers
//! `GetSchema` and `PollFlightInfo` with Unimplemented. ADBC uses both (`ExecuteSchema`,
//! incremental execution), so this thin outer service answers them and hands every other
//! call to the Flight SQL implementation.
//!
//! It is also where callers are authenticated: `Handshake` turns Basic credentials (or a
//! valid bearer token) into a bearer token in the `authorization` response header, and every
//! other call must carry a valid `authorization` header; the caller is recorded in the
//! request's extensions for the Flight SQL layer's role checks.

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::{Any, Command};
use arrow_flight::{
    Action, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest,
    HandshakeResponse, PollInfo, SchemaResult, Ticket,
};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use super::{StatementHandle, TarnFlightSql, flight_status, schema_bytes, wire_schema};
use crate::engine::Statement;

/// Tarn's `FlightService`: Flight SQL plus `GetSchema` and `PollFlightInfo`.
#[derive(Debug, Clone)]
pub struct TarnFlightService {
    sql: TarnFlightSql,
}

impl TarnFlightService {
    pub fn new(sql: TarnFlightSql) -> Self {
        Self { sql }
    }

    /// Authenticates a request and records its caller for the Flight SQL layer.
    fn authorize<T>(&self, mut request: Request<T>) -> Result<Request<T>, Status> {
        let caller = self
            .sql
            .auth
            .authenticate(authorization(&request).as_deref())
            .map_err(flight_status)?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }

    /// The schema a descriptor's statement would return, without running it (DDL
    /// included: it has a fixed result schema).
    async fn statement_schema(&self, handle: &StatementHandle) -> Result<bytes::Bytes, Status> {
        let sql = super::handle::rewrite_question_marks(&handle.sql);
        let rows = handle.param_rows();
        let schema = match self
            .sql
            .engine_for(handle.database.as_deref())
            .await
            .map_err(flight_status)?
            .prepare(&sql, rows.first())
            .await
            .map_err(flight_status)?
        {
            Statement::Query(df) => wire_schema(df.schema().as_arrow()),
            Statement::Command(c) => wire_schema(&c.schema()),
        };
        schema_bytes(&schema).map_err(flight_status)
    }
}

type Sql = TarnFlightSql;

#[tonic::async_trait]
impl FlightService for TarnFlightService {
    type HandshakeStream = <Sql as FlightService>::HandshakeStream;
    type ListFlightsStream = <Sql as FlightService>::ListFlightsStream;
    type DoGetStream = <Sql as FlightService>::DoGetStream;
    type DoPutStream = <Sql as FlightService>::DoPutStream;
    type DoExchangeStream = <Sql as FlightService>::DoExchangeStream;
    type DoActionStream = <Sql as FlightService>::DoActionStream;
    type ListActionsStream = <Sql as FlightService>::ListActionsStream;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        let auth = self.sql.auth.as_ref();
        let header = authorization(&request);
        let caller = match header {
            Some(_) => auth.authenticate(header.as_deref()),
            None if !auth.enabled() => Ok(crate::auth::Caller::anonymous()),
            // pyarrow's legacy handshake sends a BasicAuth message as the payload.
            None => {
                let mut stream = request.into_inner();
                match stream.message().await? {
                    Some(first) => match arrow_flight::BasicAuth::decode(&*first.payload) {
                        Ok(basic) if !basic.username.is_empty() => {
                            auth.login(&basic.username, &basic.password)
                        }
                        _ => auth.authenticate(None),
                    },
                    None => auth.authenticate(None),
                }
            }
        }
        .map_err(flight_status)?;
        let token = if auth.enabled() {
            auth.issue(&caller)
        } else {
            String::new()
        };
        let response = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into_bytes().into(),
        };
        let mut response =
            Response::new(Box::pin(futures::stream::iter([Ok(response)])) as Self::HandshakeStream);
        if !token.is_empty() {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| Status::internal("bearer token is not a valid header value"))?;
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let request = self.authorize(request)?;
        FlightService::list_flights(&self.sql, request).await
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let request = self.authorize(request)?;
        FlightService::get_flight_info(&self.sql, request).await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        let request = self.authorize(request)?;
        // Queries are planned synchronously, so the first poll is already complete: the
        // answer carries the whole FlightInfo and no descriptor to poll again.
        let info = FlightService::get_flight_info(&self.sql, request)
            .await?
            .into_inner();
        Ok(Response::new(PollInfo {
            info: Some(info),
            flight_descriptor: None,
            progress: Some(1.0),
            expiration_time: None,
        }))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let request = self.authorize(request)?;
        let any = Any::decode(&*request.get_ref().cmd).map_err(|e| {
            Status::invalid_argument(format!("GetSchema: not a Flight SQL command: {e}"))
        })?;
        let command = Command::try_from(any)
            .map_err(|e| Status::invalid_argument(format!("GetSchema: {e}")))?;
        let schema = match command {
            Command::CommandStatementQuery(q) => {
                let mut handle = StatementHandle::new(q.query);
                handle.database = super::requested_database(&request);
                self.statement_schema(&handle).await?
            }
            Command::CommandPreparedStatementQuery(q) => {
                let handle = self
                    .sql
                    .open_handle(&q.prepared_statement_handle)
                    .map_err(flight_status)?;
                self.statement_schema(&handle).await?
            }
            // Metadata commands have no side effects: their FlightInfo carries the schema.
            _ => {
                FlightService::get_flight_info(&self.sql, request)
                    .await?
                    .into_inner()
                    .schema
            }
        };
        Ok(Response::new(SchemaResult { schema }))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let request = self.authorize(request)?;
        FlightService::do_get(&self.sql, request).await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let request = self.authorize(request)?;
        FlightService::do_put(&self.sql, request).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let request = self.authorize(request)?;
        FlightService::do_exchange(&self.sql, request).await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let request = self.authorize(request)?;
        FlightService::do_action(&self.sql, request).await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let request = self.authorize(request)?;
        FlightService::list_actions(&self.sql, request).await
    }
}

/// The `authorization` header, if any.
fn authorization<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}
