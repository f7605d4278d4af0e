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

use std::sync::Arc;

use arrow_flight::sql::{ActionCancelQueryRequest, ActionCancelQueryResult, ProstMessageExt};
use arrow_flight::{CancelFlightInfoRequest, CancelFlightInfoResult};
use futures::StreamExt;

use super::cancel::{self, Running};
use super::session;
use super::{StatementHandle, TarnFlightSql, flight_status, schema_bytes, wire_schema};
use tarn_lake::engine::Statement;

/// Tarn's `FlightService`: Flight SQL plus `GetSchema` and `PollFlightInfo`.
#[derive(Debug, Clone)]
pub struct TarnFlightService {
    sql: TarnFlightSql,
    running: Arc<Running>,
}

impl TarnFlightService {
    pub fn new(sql: TarnFlightSql) -> Self {
        Self {
            sql,
            running: Arc::new(Running::default()),
        }
    }

    /// Session and cancellation actions, which arrow-flight's Flight SQL layer does not
    /// know; `None` for any other action.
    async fn tarn_action(
        &self,
        request: &Request<Action>,
    ) -> Option<Result<Response<<Sql as FlightService>::DoActionStream>, Status>> {
        let action = request.get_ref();
        let signer = self.sql.auth.signer();
        let result = match action.r#type.as_str() {
            "CancelFlightInfo" => {
                let info = match CancelFlightInfoRequest::decode(&*action.body) {
                    Ok(r) => r.info.unwrap_or_default(),
                    Err(e) => {
                        return Some(Err(Status::invalid_argument(format!(
                            "CancelFlightInfo: {e}"
                        ))));
                    }
                };
                self.cancel(&info);
                let status = arrow_flight::CancelStatus::Cancelled as i32;
                Ok((CancelFlightInfoResult { status }.encode_to_vec(), None))
            }
            "CancelQuery" => {
                let info = match Any::decode(&*action.body)
                    .ok()
                    .and_then(|any| any.unpack::<ActionCancelQueryRequest>().ok().flatten())
                    .and_then(|r| FlightInfo::decode(&*r.info).ok())
                {
                    Some(info) => info,
                    None => {
                        return Some(Err(Status::invalid_argument(
                            "CancelQuery: not an ActionCancelQueryRequest",
                        )));
                    }
                };
                self.cancel(&info);
                // 1: cancelled.
                Ok((
                    ActionCancelQueryResult { result: 1 }
                        .as_any()
                        .encode_to_vec(),
                    None,
                ))
            }
            "SetSessionOptions" => match session::SetSessionOptionsRequest::decode(&*action.body) {
                Ok(set) => {
                    let mut options = session::from_request(request, signer);
                    let result = session::apply(&mut options, set, &self.sql.engine).await;
                    let cookie = session::set_cookie(Some(&options), signer);
                    Ok((result.encode_to_vec(), Some(cookie)))
                }
                Err(e) => Err(Status::invalid_argument(format!("SetSessionOptions: {e}"))),
            },
            "GetSessionOptions" => {
                let options = session::from_request(request, signer);
                Ok((session::to_result(&options).encode_to_vec(), None))
            }
            "CloseSession" => {
                let result = session::CloseSessionResult {
                    status: session::CLOSED,
                };
                Ok((
                    result.encode_to_vec(),
                    Some(session::set_cookie(None, signer)),
                ))
            }
            _ => return None,
        };
        Some(result.and_then(|(body, cookie)| {
            let item = arrow_flight::Result { body: body.into() };
            let mut response = Response::new(Box::pin(futures::stream::iter([Ok(item)]))
                as <Sql as FlightService>::DoActionStream);
            if let Some(cookie) = cookie {
                let value = cookie
                    .parse()
                    .map_err(|_| Status::internal("session cookie is not a valid header"))?;
                response.metadata_mut().insert("set-cookie", value);
            }
            Ok(response)
        }))
    }

    /// Cancels the running streams of every ticket of `info`.
    fn cancel(&self, info: &FlightInfo) {
        let mut stopped = 0;
        for endpoint in &info.endpoint {
            if let Some(ticket) = &endpoint.ticket {
                stopped += self.running.cancel(&ticket.ticket);
            }
        }
        tracing::info!(streams = stopped, "query cancelled");
    }

    /// Authenticates a request and records its caller for the Flight SQL layer.
    fn authorize<T>(&self, mut request: Request<T>) -> Result<Request<T>, Status> {
        let caller = self
            .sql
            .auth
            .authenticate(authorization(&request).as_deref())
            .map_err(flight_status)?;
        let options = session::from_request(&request, self.sql.auth.signer());
        let session = session::Session::new(options);
        let address = request
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        self.sql
            .engine
            .client_call(&caller.name, &address, "flight");
        request.extensions_mut().insert(caller);
        request.extensions_mut().insert(session);
        Ok(request)
    }

    /// `response` with a `set-cookie` header when a statement of the request changed its
    /// session's settings (`SET`, `USE`, `RESET`).
    fn with_session<T>(
        &self,
        session: Option<session::Session>,
        response: Result<Response<T>, Status>,
    ) -> Result<Response<T>, Status> {
        let mut response = response?;
        if let Some(options) = session.and_then(|s| s.changed()) {
            let cookie = session::set_cookie(Some(&options), self.sql.auth.signer());
            let value = cookie
                .parse()
                .map_err(|_| Status::internal("session cookie is not a valid header"))?;
            response.metadata_mut().insert("set-cookie", value);
        }
        Ok(response)
    }

    /// The schema a descriptor's statement would return, without running it (DDL
    /// included: it has a fixed result schema).
    async fn statement_schema(&self, handle: &StatementHandle) -> Result<bytes::Bytes, Status> {
        let sql = super::handle::rewrite_question_marks(&handle.sql);
        let rows = handle.param_rows();
        let schema = match self
            .sql
            .engine_for(handle.database.as_deref(), &handle.settings)
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
        let session = request.extensions().get::<session::Session>().cloned();
        let response = FlightService::get_flight_info(&self.sql, request).await;
        self.with_session(session, response)
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        let request = self.authorize(request)?;
        let session = request.extensions().get::<session::Session>().cloned();
        // Queries are planned synchronously, so the first poll is already complete: the
        // answer carries the whole FlightInfo and no descriptor to poll again.
        let info = FlightService::get_flight_info(&self.sql, request)
            .await?
            .into_inner();
        let response = Response::new(PollInfo {
            info: Some(info),
            flight_descriptor: None,
            progress: Some(1.0),
            expiration_time: None,
        });
        self.with_session(session, Ok(response))
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
                handle.settings = super::session_settings(&request);
                self.statement_schema(&handle).await?
            }
            Command::CommandPreparedStatementQuery(q) => {
                let mut handle = self
                    .sql
                    .open_handle(&q.prepared_statement_handle)
                    .map_err(flight_status)?;
                handle.settings = super::session_settings(&request);
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
        // Every ticket Tarn issues is a Flight SQL command; anything else (a truncated or
        // made-up ticket) gets the same answer as a forged one, not a protobuf decode error.
        if <arrow_flight::sql::Any as prost::Message>::decode(request.get_ref().ticket.as_ref())
            .is_err()
        {
            return Err(Status::invalid_argument(
                "this ticket was not issued by this server (or was altered); run the \
                 statement again",
            ));
        }
        let (token, registration) = self.running.start(&request.get_ref().ticket)?;
        let stream = FlightService::do_get(&self.sql, request)
            .await?
            .into_inner();
        Ok(Response::new(cancel::cancellable(
            stream,
            token,
            registration,
        )))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let request = self.authorize(request)?;
        let session = request.extensions().get::<session::Session>().cloned();
        let response = FlightService::do_put(&self.sql, request).await;
        self.with_session(session, response)
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
        if let Some(response) = self.tarn_action(&request).await {
            return response;
        }
        FlightService::do_action(&self.sql, request).await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let request = self.authorize(request)?;
        let listed = FlightService::list_actions(&self.sql, request)
            .await?
            .into_inner();
        let ours = [
            (
                "CancelFlightInfo",
                "Cancel a running query: its DoGet streams end CANCELLED",
            ),
            (
                "SetSessionOptions",
                "Set session options: catalog, schema, time_zone, target_partitions, \
                 query_timeout, tarn.* planner switches",
            ),
            ("GetSessionOptions", "Get the session's options"),
            ("CloseSession", "End the session"),
        ]
        .map(|(kind, description)| {
            Ok(arrow_flight::ActionType {
                r#type: kind.to_string(),
                description: description.to_string(),
            })
        });
        Ok(Response::new(Box::pin(
            listed.chain(futures::stream::iter(ours)),
        )))
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
