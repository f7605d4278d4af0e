//! A connection's startup: the password check (Tarn's users and API tokens), the
//! database and settings the client asked for, and the parameters Postgres reports.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion_postgres::pgwire;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{
    ServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::{
    ClientInfo, METADATA_DATABASE, METADATA_USER, PgWireConnectionState, PidSecretKeyGenerator,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::Door;
use super::session::Session;
use crate::auth::Caller;
use tarn_lake::engine::CATALOG_NAME;
use tarn_lake::error::{Error, Result};

#[async_trait]
impl StartupHandler for Door {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if self.auth.enabled() {
                    client.set_state(PgWireConnectionState::AuthenticationInProgress);
                    client
                        .send(PgWireBackendMessage::Authentication(
                            Authentication::CleartextPassword,
                        ))
                        .await?;
                } else {
                    self.admit(client, Caller::anonymous()).await?;
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(password) => {
                let password = password.into_password()?.password;
                let user = client
                    .metadata()
                    .get(METADATA_USER)
                    .cloned()
                    .unwrap_or_default();
                let auth = Arc::clone(&self.auth);
                let name = user.clone();
                // argon2 is slow on purpose: off the runtime's threads.
                let checked = tokio::task::spawn_blocking(move || {
                    auth.login(&name, &password)
                        .or_else(|_| auth.authenticate(Some(&format!("Bearer {password}"))))
                })
                .await;
                match checked {
                    Ok(Ok(caller)) => self.admit(client, caller).await?,
                    _ => {
                        return Err(fatal(
                            "28P01",
                            format!(
                                "password authentication failed for user \"{user}\" (give a \
                                 Tarn user's password, or an API token as the password)"
                            ),
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl Door {
    /// Opens the session of an authenticated `caller`: its database, its startup settings,
    /// its cancel key; then tells the client it is ready.
    async fn admit<C>(&self, client: &mut C, caller: Caller) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self
            .open(client, caller)
            .await
            .map_err(|e| fatal(super::error::sqlstate(&e), e.to_string()))?;
        let (pid, secret) = self.pids.generate(client);
        client.set_pid_and_secret_key(pid, secret.clone());
        let session = {
            client.session_extensions().insert(session);
            super::session_of(client)?
        };
        let key = (pid, secret.to_bytes().to_vec());
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.retain(|_, s| s.strong_count() > 0);
            sessions.insert(key, Arc::downgrade(&session));
        }
        finish_authentication(client, &Parameters).await
    }

    /// The session for the database and settings of the startup message.
    async fn open<C: ClientInfo>(&self, client: &C, caller: Caller) -> Result<Session> {
        let metadata = client.metadata();
        let engine = match metadata.get(METADATA_DATABASE).map(String::as_str) {
            None | Some("") | Some(CATALOG_NAME) => self.engine.clone(),
            Some(database) if self.engine.databases().iter().any(|d| d == database) => {
                self.engine.in_database(database).await?
            }
            Some(database) => {
                return Err(Error::InvalidArgument(format!(
                    "database \"{database}\" does not exist; connect to database \
                     \"{CATALOG_NAME}\" (Tarn's catalog, whose schemas are its databases) or \
                     to one of its databases: {}",
                    self.engine.databases().join(", ")
                )));
            }
        };
        let session = Session::new(caller, engine, self.gone(client.socket_addr()));
        for (name, value) in startup_settings(metadata) {
            // Drivers send parameters of their own at startup; Postgres ignores the ones
            // it does not know there too.
            if super::session::is_setting(&name) {
                session.set(&name, &value).await?;
            }
        }
        Ok(session)
    }
}

/// The settings a client sent at startup: parameters such as `DateStyle`, `TimeZone`,
/// `application_name`, and `-c name=value` in `options` (how `PGOPTIONS` and JDBC's
/// `options` pass `search_path`).
fn startup_settings(metadata: &HashMap<String, String>) -> Vec<(String, String)> {
    const NOT_SETTINGS: [&str; 4] = ["user", "database", "options", "replication"];
    let mut settings: Vec<(String, String)> = metadata
        .iter()
        .filter(|(k, _)| !NOT_SETTINGS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(options) = metadata.get("options") {
        let mut words = options.split_whitespace();
        while let Some(word) = words.next() {
            let assignment = match word {
                "-c" => words.next(),
                w => w.strip_prefix("--").or_else(|| w.strip_prefix("-c")),
            };
            if let Some((name, value)) = assignment.and_then(|a| a.split_once('=')) {
                settings.push((name.replace('-', "_"), value.to_string()));
            }
        }
    }
    settings
}

fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        code.to_string(),
        message,
    )))
}

/// The parameters a client learns at startup, from its session.
struct Parameters;

impl ServerParameterProvider for Parameters {
    fn server_parameters<C>(&self, client: &C) -> Option<HashMap<String, String>>
    where
        C: ClientInfo,
    {
        let session = client.session_extensions().get::<Session>()?;
        let setting = |name: &str| session.setting(name).unwrap_or_default();
        Some(HashMap::from([
            ("server_version".into(), setting("server_version")),
            ("server_encoding".into(), "UTF8".into()),
            ("client_encoding".into(), setting("client_encoding")),
            ("DateStyle".into(), setting("datestyle")),
            ("IntervalStyle".into(), setting("intervalstyle")),
            ("TimeZone".into(), setting("timezone")),
            ("integer_datetimes".into(), "on".into()),
            ("standard_conforming_strings".into(), "on".into()),
            ("application_name".into(), setting("application_name")),
            ("search_path".into(), setting("search_path")),
            ("is_superuser".into(), setting("is_superuser")),
            ("session_authorization".into(), session.caller.name.clone()),
            ("default_transaction_read_only".into(), "off".into()),
            ("in_hot_standby".into(), "off".into()),
        ]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_carry_settings() {
        let metadata = HashMap::from([
            ("user".to_string(), "ana".to_string()),
            (
                "options".to_string(),
                "-c search_path=analytics --statement-timeout=5s".to_string(),
            ),
            ("DateStyle".to_string(), "ISO".to_string()),
        ]);
        let mut settings = startup_settings(&metadata);
        settings.sort();
        assert_eq!(
            settings,
            vec![
                ("DateStyle".to_string(), "ISO".to_string()),
                ("search_path".to_string(), "analytics".to_string()),
                ("statement_timeout".to_string(), "5s".to_string()),
            ]
        );
    }
}
