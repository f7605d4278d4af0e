//! A Postgres connection's session: who it is, its settings (`SET`/`SHOW`/`RESET`), the
//! database unqualified names resolve in (`search_path`), and the statement a
//! `CancelRequest` stops.
//!
//! Tarn runs every statement on its own (reads see one catalog snapshot each), so
//! `BEGIN`/`COMMIT`/`ROLLBACK` are accepted as the markers drivers send around
//! statements, with Postgres' replies, and change nothing.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use datafusion::sql::sqlparser::ast::{Expr, Reset, Set, Statement, Use, Value};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use tokio_util::sync::CancellationToken;

use crate::auth::Caller;
use tarn_lake::engine::Engine;
use tarn_lake::engine::settings::{Settings, canonical_name};
use tarn_lake::error::{Error, Result};

/// The settings a client may `SET` and `SHOW`, with their values at connect. Drivers send
/// these at connect (pgjdbc: `extra_float_digits`, `application_name`; psycopg and
/// SQLAlchemy: `DateStyle`, `TimeZone`, `standard_conforming_strings`).
const SETTINGS: [(&str, &str); 24] = [
    ("application_name", ""),
    ("bytea_output", "hex"),
    ("client_encoding", "UTF8"),
    ("client_min_messages", "notice"),
    ("datestyle", "ISO, MDY"),
    ("default_transaction_isolation", "read committed"),
    ("default_transaction_read_only", "off"),
    ("extra_float_digits", "1"),
    ("idle_in_transaction_session_timeout", "0"),
    ("integer_datetimes", "on"),
    ("intervalstyle", "postgres"),
    ("is_superuser", "off"),
    ("jit", "off"),
    ("lock_timeout", "0"),
    ("max_identifier_length", "63"),
    ("search_path", "public"),
    ("server_encoding", "UTF8"),
    ("server_version", ""),
    ("server_version_num", "160006"),
    ("standard_conforming_strings", "on"),
    ("statement_timeout", "0"),
    ("timezone", "UTC"),
    ("transaction_isolation", "read committed"),
    ("transaction_read_only", "off"),
];

/// Settings a client cannot change.
const READ_ONLY: [&str; 7] = [
    "integer_datetimes",
    "is_superuser",
    "max_identifier_length",
    "server_encoding",
    "server_version",
    "server_version_num",
    "standard_conforming_strings",
];

/// One connection's state, kept in its session extensions.
#[derive(Debug)]
pub(crate) struct Session {
    pub caller: Caller,
    /// The connection's engine: the Postgres engine in the chosen database and time zone.
    engine: Mutex<Engine>,
    settings: Mutex<BTreeMap<String, String>>,
    /// Fired by a `CancelRequest` for this connection; replaced for each statement.
    cancel: Mutex<CancellationToken>,
    /// Fired when the client closes its connection: the statement running stops.
    gone: CancellationToken,
    /// Statements that changed the catalog since `BEGIN` (none outside a transaction).
    writes_in_transaction: Mutex<Option<usize>>,
    /// The engine's session settings Postgres has no name for: the planner switches
    /// (`tarn.*`), `target_partitions`, `query_timeout`.
    engine_settings: Mutex<Settings>,
}

/// What a session statement answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// A command tag (`SET`, `BEGIN`, …), and whether it starts or ends a transaction.
    Tag(&'static str, Transaction),
    /// One setting's value (`SHOW name`).
    Value { name: String, value: String },
}

/// How a statement moves the connection's transaction state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transaction {
    Unchanged,
    Start,
    Commit,
    Rollback,
}

impl Session {
    /// A session for `caller` on `engine`; `gone` fires when the client disconnects.
    pub(crate) fn new(caller: Caller, engine: Engine, gone: CancellationToken) -> Self {
        let mut settings: BTreeMap<String, String> = SETTINGS
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        settings.insert("server_version".into(), super::catalog::server_version());
        settings.insert("search_path".into(), engine.default_database());
        if matches!(caller.role, crate::auth::Role::Admin) {
            settings.insert("is_superuser".into(), "on".into());
        }
        let session = Self {
            caller,
            engine: Mutex::new(engine),
            settings: Mutex::new(settings),
            cancel: Mutex::new(CancellationToken::new()),
            gone,
            writes_in_transaction: Mutex::new(None),
            engine_settings: Mutex::new(Settings::default()),
        };
        session.install_functions();
        session
    }

    /// Puts the session's settings behind `current_setting()`.
    fn install_functions(&self) {
        let settings = self.settings.lock().map(|s| s.clone()).unwrap_or_default();
        match super::catalog::with_settings(&self.engine(), settings) {
            Ok(engine) => {
                if let Ok(mut current) = self.engine.lock() {
                    *current = engine;
                }
            }
            Err(e) => tracing::warn!(error = %e, "current_setting() keeps its old values"),
        }
    }

    /// The engine the next statement runs on.
    pub(crate) fn engine(&self) -> Engine {
        self.engine
            .lock()
            .map(|e| e.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The value of a setting (lowercase name), if it is one.
    pub(crate) fn setting(&self, name: &str) -> Option<String> {
        self.settings.lock().ok()?.get(name).cloned()
    }

    /// Every setting, for formatting results (`datestyle`, `extra_float_digits`, …).
    pub(crate) fn settings(&self) -> std::collections::HashMap<String, String> {
        self.settings
            .lock()
            .map(|s| s.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// The time limit `statement_timeout` asks for (none for 0).
    pub(crate) fn timeout(&self) -> Option<Duration> {
        let value = self.setting("statement_timeout")?;
        parse_timeout(&value).ok().flatten()
    }

    /// A fresh token for the statement about to run; a `CancelRequest` or the client's
    /// disconnecting fires it.
    pub(crate) fn start_statement(&self) -> CancellationToken {
        let token = self.gone.child_token();
        if let Ok(mut current) = self.cancel.lock() {
            *current = token.clone();
        }
        token
    }

    /// Stops the statement running now, if any.
    pub(crate) fn cancel(&self) {
        if let Ok(current) = self.cancel.lock() {
            current.cancel();
        }
    }

    /// The setting `sql` shows, when it is `SHOW <setting>`.
    pub(crate) fn shows(&self, sql: &str) -> Option<String> {
        match session_statement(sql)? {
            Statement::ShowVariable { variable } => Some(canonical(&join_idents(&variable))),
            _ => None,
        }
    }

    /// Whether `sql` is a statement the session answers itself.
    pub(crate) fn is_session_statement(&self, sql: &str) -> bool {
        session_statement(sql).is_some()
    }

    /// Notes a statement that changed the catalog (committed as it ran).
    pub(crate) fn wrote(&self) {
        if let Ok(mut writes) = self.writes_in_transaction.lock()
            && let Some(n) = writes.as_mut()
        {
            *n += 1;
        }
    }

    /// `BEGIN`, `COMMIT` or `ROLLBACK`. A `ROLLBACK` after writes is an error: Tarn
    /// commits each statement as it runs, so there is nothing to roll back, and a client
    /// counting on it must be told.
    fn transaction(&self, transaction: Transaction) -> Result<()> {
        let mut writes = self
            .writes_in_transaction
            .lock()
            .map_err(|_| Error::Internal("session lock poisoned".into()))?;
        let before = match transaction {
            Transaction::Start => writes.replace(0),
            _ => writes.take(),
        };
        match (transaction, before) {
            (Transaction::Rollback, Some(n)) if n > 0 => Err(Error::InvalidArgument(format!(
                "ROLLBACK cannot undo the {n} statement(s) that changed the catalog since \
                 BEGIN: Tarn commits each statement when it runs; run them with autocommit"
            ))),
            _ => Ok(()),
        }
    }

    /// Applies a setting given at startup or by `SET` (`name` in any case).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown or read-only setting or a bad value;
    /// as [`Engine::in_database`] for a `search_path` naming no database.
    pub(crate) async fn set(&self, name: &str, value: &str) -> Result<()> {
        let name = canonical(name);
        if !SETTINGS.iter().any(|(k, _)| *k == name) {
            return self.set_engine_setting(&name, Some(value)).await;
        }
        if READ_ONLY.contains(&name.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "parameter \"{name}\" cannot be changed"
            )));
        }
        match name.as_str() {
            "search_path" => self.use_database(value).await?,
            "timezone" => self.use_time_zone(value).await?,
            "statement_timeout" => {
                parse_timeout(value)?;
            }
            _ => {}
        }
        if let Ok(mut settings) = self.settings.lock() {
            settings.insert(name, value.to_string());
        }
        self.install_functions();
        Ok(())
    }

    fn moved(&self, tag: &'static str, transaction: Transaction) -> Result<Option<Reply>> {
        self.transaction(transaction)?;
        Ok(Some(Reply::Tag(tag, transaction)))
    }

    /// A setting of Tarn's engine (`Some` value: `SET`; `None`: `RESET`); `time_zone`
    /// and `schema` are Postgres' `TimeZone` and `search_path`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a name that is neither Postgres' nor Tarn's, or a bad
    /// value.
    async fn set_engine_setting(&self, name: &str, value: Option<&str>) -> Result<()> {
        let Some(canonical) = canonical_name(name) else {
            return Err(unknown(name));
        };
        match (canonical.as_str(), value) {
            ("time_zone", Some(v)) => return Box::pin(self.set("timezone", v)).await,
            ("time_zone", None) => return Box::pin(self.reset(Some("timezone"))).await,
            ("schema", Some(v)) => return Box::pin(self.set("search_path", v)).await,
            ("schema", None) => return Ok(()),
            _ => {}
        }
        let engine = self.engine();
        let mut settings = self
            .engine_settings
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        match value {
            Some(v) => engine.set_setting(&mut settings, &canonical, v).await?,
            None => settings.reset(Some(&canonical))?,
        }
        self.use_engine_settings(settings)
    }

    /// Puts `settings` in force for the connection's next statements.
    fn use_engine_settings(&self, settings: Settings) -> Result<()> {
        let engine = self.engine().with_settings(&settings)?;
        if let Ok(mut current) = self.engine.lock() {
            *current = engine;
        }
        if let Ok(mut kept) = self.engine_settings.lock() {
            *kept = settings;
        }
        Ok(())
    }

    /// `RESET name` / `RESET ALL`.
    async fn reset(&self, name: Option<&str>) -> Result<()> {
        if let Some(n) = name
            && !is_setting(n)
        {
            return self.set_engine_setting(n, None).await;
        }
        if name.is_none() {
            self.use_engine_settings(Settings::default())?;
        }
        let names: Vec<String> = match name {
            Some(n) => vec![canonical(n)],
            None => SETTINGS
                .iter()
                .filter(|(k, _)| !READ_ONLY.contains(k))
                .map(|(k, _)| (*k).to_string())
                .collect(),
        };
        for name in names {
            let default = SETTINGS
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| *v)
                .ok_or_else(|| unknown(&name))?;
            if name == "search_path" {
                continue;
            }
            self.set(&name, default).await?;
        }
        Ok(())
    }

    /// `search_path`: the first entry naming a Tarn database becomes the default for
    /// unqualified names (`public`, `"$user"` and `pg_catalog` are skipped, as Postgres
    /// skips schemas that do not exist).
    async fn use_database(&self, path: &str) -> Result<()> {
        let engine = self.engine();
        let databases = engine.databases();
        let chosen = path
            .split(',')
            .map(|p| p.trim().trim_matches(['\'', '"']))
            .find(|p| databases.iter().any(|d| d == p));
        match chosen {
            Some(database) => {
                let engine = engine.in_database(database).await?;
                if let Ok(mut current) = self.engine.lock() {
                    *current = engine;
                }
                Ok(())
            }
            None if path
                .split(',')
                .map(|p| p.trim().trim_matches(['\'', '"']))
                .all(|p| matches!(p, "" | "public" | "$user" | "pg_catalog")) =>
            {
                Ok(())
            }
            None => Err(Error::InvalidArgument(format!(
                "search_path '{path}' names no database of this catalog; the databases are: {}",
                databases.join(", ")
            ))),
        }
    }

    /// `TimeZone`: the zone `now()` and timestamps with a zone are shown in.
    async fn use_time_zone(&self, zone: &str) -> Result<()> {
        let zone = match zone.trim() {
            z if z.eq_ignore_ascii_case("utc") || z.eq_ignore_ascii_case("etc/utc") => "+00:00",
            z => z,
        };
        if zone.parse::<arrow::array::timezone::Tz>().is_err() {
            return Err(Error::InvalidArgument(format!(
                "invalid value for parameter \"TimeZone\": \"{zone}\"; give an IANA name such \
                 as 'Europe/Paris' or an offset such as '+02:00'"
            )));
        }
        // Kept with the engine's settings, so `now()` takes the zone too.
        let mut settings = self
            .engine_settings
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        let engine = self.engine();
        engine.set_setting(&mut settings, "time_zone", zone).await?;
        self.use_engine_settings(settings)
    }

    /// Answers `sql` when it is a session statement (`SET`, `SHOW` of a setting, `RESET`,
    /// transaction control, `DISCARD`); `None` when it is for the engine.
    ///
    /// # Errors
    /// As [`Session::set`].
    pub(crate) async fn answer(&self, sql: &str) -> Result<Option<Reply>> {
        let Some(statement) = session_statement(sql) else {
            return Ok(None);
        };
        let tag = |t| Ok(Some(Reply::Tag(t, Transaction::Unchanged)));
        match statement {
            Statement::Set(Set::SingleAssignment {
                variable, values, ..
            }) => {
                let value = values.iter().map(value_text).collect::<Vec<_>>().join(", ");
                self.set(&variable.to_string(), &value).await?;
                tag("SET")
            }
            Statement::Set(Set::SetTimeZone { value, .. }) => {
                self.set("timezone", &value_text(&value)).await?;
                tag("SET")
            }
            Statement::Set(Set::SetNames { charset_name, .. }) => {
                self.set("client_encoding", &charset_name.value).await?;
                tag("SET")
            }
            Statement::Set(Set::SetTransaction { .. }) => tag("SET"),
            Statement::Use(Use::Object(name) | Use::Schema(name) | Use::Database(name)) => {
                self.set("search_path", &name.to_string()).await?;
                tag("SET")
            }
            Statement::ShowVariable { variable } => {
                let name = variable
                    .iter()
                    .map(|i| i.value.as_str())
                    .collect::<Vec<_>>()
                    .join(" ");
                let name = canonical(&name);
                let value = self.setting(&name).ok_or_else(|| unknown(&name))?;
                Ok(Some(Reply::Value { name, value }))
            }
            Statement::StartTransaction { .. } => self.moved("BEGIN", Transaction::Start),
            Statement::Commit { .. } => self.moved("COMMIT", Transaction::Commit),
            Statement::Rollback { .. } => self.moved("ROLLBACK", Transaction::Rollback),
            Statement::Discard { .. } => tag("DISCARD ALL"),
            Statement::Reset(reset) => {
                match reset.reset {
                    Reset::ALL => self.reset(None).await?,
                    Reset::ConfigurationParameter(name) => {
                        self.reset(Some(&name.to_string())).await?;
                    }
                }
                tag("RESET")
            }
            _ => Ok(None),
        }
    }
}

/// The statement when `sql` is one session statement Tarn answers itself.
fn session_statement(sql: &str) -> Option<Statement> {
    let first = sql.split_whitespace().next()?.to_ascii_lowercase();
    if !matches!(
        first.as_str(),
        "set"
            | "show"
            | "reset"
            | "begin"
            | "start"
            | "commit"
            | "end"
            | "rollback"
            | "abort"
            | "discard"
            | "use"
    ) {
        return None;
    }
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    if statements.len() != 1 {
        return None;
    }
    let statement = statements.remove(0);
    let ours = match &statement {
        // `SHOW TABLES`, `SHOW COLUMNS`, Tarn's `SHOW PARTITIONS db.t` … are the engine's.
        Statement::ShowVariable { variable } => is_setting(&join_idents(variable)),
        // `SET tarn.…` and the engine's other settings are kept here too; other
        // `SET datafusion.…` go to the engine, which says what it allows.
        Statement::Set(Set::SingleAssignment { variable, .. }) => {
            let name = variable.to_string();
            !name.contains('.') || canonical_name(&name).is_some()
        }
        Statement::Use(_) => true,
        Statement::Set(
            Set::SetTimeZone { .. } | Set::SetNames { .. } | Set::SetTransaction { .. },
        )
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Discard { .. }
        | Statement::Reset(_) => true,
        _ => false,
    };
    ours.then_some(statement)
}

fn join_idents(idents: &[datafusion::sql::sqlparser::ast::Ident]) -> String {
    idents
        .iter()
        .map(|i| i.value.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A setting's name as Tarn keeps it: lowercase, `time zone` as `timezone`.
fn canonical(name: &str) -> String {
    let name = name.trim().trim_matches('"').to_ascii_lowercase();
    match name.as_str() {
        "time zone" => "timezone".into(),
        "transaction isolation level" => "transaction_isolation".into(),
        _ => name,
    }
}

/// Whether `name` is a setting the session keeps.
pub(crate) fn is_setting(name: &str) -> bool {
    let name = canonical(name);
    SETTINGS.iter().any(|(k, _)| *k == name)
}

fn unknown(name: &str) -> Error {
    Error::InvalidArgument(format!("unrecognized configuration parameter \"{name}\""))
}

/// A `SET` value as text: strings without their quotes, `DEFAULT`/identifiers as written.
fn value_text(expr: &Expr) -> String {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(i) => i.value.clone(),
        other => other.to_string(),
    }
}

/// `statement_timeout`: milliseconds, or a number with `ms`, `s`, `min` or `h`; 0 is none.
fn parse_timeout(value: &str) -> Result<Option<Duration>> {
    let text = value.trim().trim_matches('\'').to_ascii_lowercase();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || {
        Error::InvalidArgument(format!(
            "invalid value for parameter \"statement_timeout\": \"{value}\"; give \
             milliseconds or a number with ms, s, min or h"
        ))
    };
    let number: f64 = number.parse().map_err(|_| bad())?;
    let millis = match unit.trim() {
        "" | "ms" => number,
        "s" => number * 1e3,
        "min" => number * 60e3,
        "h" => number * 3600e3,
        _ => return Err(bad()),
    };
    if !millis.is_finite() || millis < 0.0 {
        return Err(bad());
    }
    Ok((millis > 0.0).then(|| Duration::from_secs_f64(millis / 1e3)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_in_postgres_units() {
        assert_eq!(parse_timeout("0").unwrap(), None);
        assert_eq!(
            parse_timeout("1500").unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_timeout("2s").unwrap(), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_timeout("'1min'").unwrap(),
            Some(Duration::from_secs(60))
        );
        assert!(parse_timeout("soon").is_err());
        assert!(parse_timeout("5 fortnights").is_err());
    }

    #[test]
    fn session_statements_and_the_engines() {
        assert!(session_statement("SET search_path TO analytics").is_some());
        assert!(session_statement("SET TIME ZONE 'Europe/Paris'").is_some());
        assert!(session_statement("show DateStyle").is_some());
        assert!(session_statement("BEGIN").is_some());
        assert!(session_statement("SHOW TABLES").is_none());
        assert!(session_statement("SHOW PARTITIONS db.t").is_none());
        assert!(session_statement("SELECT 1").is_none());
        assert!(session_statement("SET datafusion.execution.batch_size = 10").is_none());
    }
}
