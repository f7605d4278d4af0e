//! A session's settings: what `SET`, `RESET`, `USE` and `SHOW` change and read.
//!
//! A session may change what affects only its own statements: its time zone, its default
//! database, how many partitions a query is split into (up to the server's number), a
//! lower time limit, and the planner's `tarn.*` switches. The server's memory, admission
//! and security settings are never a session's.
//!
//! The engine keeps no sessions: each front door keeps a session's [`Settings`] where its
//! protocol keeps state (a Flight session's signed cookie, a Postgres connection, an HTTP
//! request's body) and plans each statement on [`Engine::with_settings`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::config::ExtensionOptions;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::session_state::SessionState;
use datafusion::sql::parser::{ResetStatement, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{Expr, ObjectName, Set, Statement, Use, Value};
use serde::{Deserialize, Serialize};

use super::Engine;
use crate::error::{Error, Result};

/// What a session changed, by setting name; a setting not named has the server's value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Settings(BTreeMap<String, String>);

/// A session statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCommand {
    /// `SET [SESSION] name = value`, `SET TIME ZONE '…'`, `USE database`.
    Set { name: String, value: String },
    /// `RESET name` (`None`: `RESET ALL`).
    Reset(Option<String>),
    /// `SHOW name` (`None`: `SHOW SESSION`, every setting a session may change).
    Show(Option<String>),
}

/// The settings a session may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    TimeZone,
    Schema,
    TargetPartitions,
    QueryTimeout,
    /// A planner switch `tarn.<name>` (true or false).
    Switch,
}

const TIME_ZONE: &str = "time_zone";
const SCHEMA: &str = "schema";
const TARGET_PARTITIONS: &str = "target_partitions";
const QUERY_TIMEOUT: &str = "query_timeout";

/// A setting's canonical name and kind, for any of its spellings (`TIME ZONE`, `timezone`,
/// `datafusion.execution.time_zone`, Trino's `query_max_execution_time`, …); `None` for a
/// name that is not a session's.
fn kind_of(name: &str) -> Option<(String, Kind)> {
    let lower = name.trim().trim_matches('"').to_ascii_lowercase();
    let kind = match lower.as_str() {
        "time_zone" | "timezone" | "time zone" | "datafusion.execution.time_zone" => {
            return Some((TIME_ZONE.into(), Kind::TimeZone));
        }
        "schema" | "database" => return Some((SCHEMA.into(), Kind::Schema)),
        "target_partitions" | "datafusion.execution.target_partitions" => {
            return Some((TARGET_PARTITIONS.into(), Kind::TargetPartitions));
        }
        "query_timeout" | "query_max_execution_time" | "query_max_run_time" => {
            return Some((QUERY_TIMEOUT.into(), Kind::QueryTimeout));
        }
        other => other,
    };
    let switch = kind.strip_prefix("tarn.")?;
    switches()
        .iter()
        .any(|(k, _)| k == switch)
        .then(|| (kind.to_string(), Kind::Switch))
}

/// The planner switches (`tarn.<key>`) with their descriptions.
fn switches() -> Vec<(String, String)> {
    tarn_optimizer::TarnOptions::default()
        .entries()
        .into_iter()
        .map(|e| (e.key, e.description.to_string()))
        .collect()
}

/// The planner switches' values in `options` (`key`, `true`/`false`).
pub(crate) fn switch_values(options: &datafusion::config::ConfigOptions) -> Vec<(String, String)> {
    options
        .extensions
        .get::<tarn_optimizer::TarnOptions>()
        .map(|t| {
            t.entries()
                .into_iter()
                .map(|e| (e.key, e.value.unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

/// The name Tarn keeps a session setting under (`time_zone` for `TIME ZONE`, …), if
/// `name` is one.
pub fn canonical_name(name: &str) -> Option<String> {
    kind_of(name).map(|(name, _)| name)
}

/// Whether `name` is a setting a session may change (in any of its spellings).
pub fn is_session_setting(name: &str) -> bool {
    kind_of(name).is_some()
}

/// What a session may set, for messages.
fn settable() -> String {
    format!(
        "time_zone, schema, target_partitions, query_timeout and the planner switches {}",
        switches()
            .iter()
            .map(|(k, _)| format!("tarn.{k}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The error for a name that is not a session's setting.
fn refused(name: &str) -> Error {
    let name = name.trim();
    let whose = if name.to_ascii_lowercase().starts_with("datafusion.") {
        " it is the server's (start Tarn with --datafusion-config to change it);"
    } else if name.to_ascii_lowercase().starts_with("tarn.") {
        " Tarn has no such planner switch;"
    } else {
        ""
    };
    Error::InvalidArgument(format!(
        "'{name}' is not a setting a session may change;{whose} a session may set {}",
        settable()
    ))
}

/// The error for a `SET`, `RESET` or `USE` run where there is no session to keep it (an
/// HTTP request, a one-shot command); a name no session may set is refused as such.
pub(crate) fn without_session(command: &SessionCommand) -> Error {
    match command {
        SessionCommand::Set { name, .. } | SessionCommand::Reset(Some(name))
            if kind_of(name).is_none() =>
        {
            refused(name)
        }
        _ => Error::InvalidArgument(
            "SET, RESET and USE change a session's settings, and this request has no \
             session: over HTTP give them in the request's \"settings\" object; Flight SQL \
             and Postgres clients keep them for their connection"
                .into(),
        ),
    }
}

impl Settings {
    /// Every setting the session changed, by canonical name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether the session changed nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value the session gave `name` (any spelling), if it changed it.
    pub fn get(&self, name: &str) -> Option<&str> {
        let (name, _) = kind_of(name)?;
        self.0.get(&name).map(String::as_str)
    }

    /// The time limit the session asked for (it only ever lowers the server's).
    pub fn timeout(&self) -> Option<Duration> {
        self.0
            .get(QUERY_TIMEOUT)
            .and_then(|t| super::limits::parse_duration(t).ok())
    }

    /// Forgets `name` (any spelling), or every setting; the server's values apply again.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a name that is not a session's setting.
    pub fn reset(&mut self, name: Option<&str>) -> Result<()> {
        match name {
            None => self.0.clear(),
            Some(name) => {
                let (name, _) = kind_of(name).ok_or_else(|| refused(name))?;
                self.0.remove(&name);
            }
        }
        Ok(())
    }
}

impl Engine {
    /// Checks `value` for the setting `name` and keeps it in `settings` (`DEFAULT` or
    /// `LOCAL` resets it).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the setting, what a session may set, or the
    /// values it takes.
    pub async fn set_setting(
        &self,
        settings: &mut Settings,
        name: &str,
        value: &str,
    ) -> Result<()> {
        let (canonical, kind) = kind_of(name).ok_or_else(|| refused(name))?;
        let value = value.trim();
        if value.eq_ignore_ascii_case("default")
            || (kind == Kind::TimeZone && value.eq_ignore_ascii_case("local"))
        {
            settings.0.remove(&canonical);
            return Ok(());
        }
        let bad = |what: &str| {
            Error::InvalidArgument(format!(
                "'{value}' is not a value for the setting {canonical}: give {what}"
            ))
        };
        let value = match kind {
            Kind::TimeZone => {
                if value.parse::<arrow::array::timezone::Tz>().is_err() {
                    return Err(bad(
                        "an IANA zone name such as 'Europe/Paris', 'UTC', or an offset such \
                         as '+02:00'",
                    ));
                }
                value.to_string()
            }
            Kind::Schema => {
                self.in_database(value).await?;
                value.to_string()
            }
            Kind::TargetPartitions => {
                let most = self.state.config().target_partitions();
                match value.parse::<usize>() {
                    Ok(n) if (1..=most).contains(&n) => n.to_string(),
                    _ => {
                        return Err(bad(&format!(
                            "a whole number from 1 to {most} (the server's target_partitions)"
                        )));
                    }
                }
            }
            Kind::QueryTimeout => match super::limits::parse_duration(value) {
                Ok(d) if !d.is_zero() => value.to_string(),
                _ => return Err(bad("a duration such as 30s, 5m or 500ms")),
            },
            Kind::Switch => match value.to_ascii_lowercase().as_str() {
                "true" | "on" | "1" => "true".to_string(),
                "false" | "off" | "0" => "false".to_string(),
                _ => return Err(bad("true or false")),
            },
        };
        settings.0.insert(canonical, value);
        Ok(())
    }

    /// This engine with a session's settings in force.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a setting this server does not know (settings kept
    /// by a client from an older server are checked again here).
    pub fn with_settings(&self, settings: &Settings) -> Result<Engine> {
        if settings.is_empty() && self.settings.is_empty() {
            return Ok(self.clone());
        }
        let server = &self.shared;
        let mut engine = self.with_state(|mut state| {
            // What the session does not set has the server's value (a setting it reset
            // goes back).
            let options = state.config_mut().options_mut();
            if settings.get(TARGET_PARTITIONS).is_none() {
                options.execution.target_partitions = server.target_partitions;
            }
            for (key, value) in &server.switches {
                let key = format!("tarn.{key}");
                if settings.get(&key).is_none() {
                    options
                        .set(&key, value)
                        .map_err(|e| Error::Internal(e.strip_backtrace()))?;
                }
            }
            for (name, value) in settings.iter() {
                let (_, kind) = kind_of(name).ok_or_else(|| refused(name))?;
                let options = state.config_mut().options_mut();
                let set = |options: &mut datafusion::config::ConfigOptions, key: &str| {
                    options
                        .set(key, value)
                        .map_err(|e| Error::InvalidArgument(e.strip_backtrace()))
                };
                match kind {
                    Kind::TimeZone => set(options, "datafusion.execution.time_zone")?,
                    Kind::Schema => options.catalog.default_schema = value.to_string(),
                    Kind::TargetPartitions => {
                        set(options, "datafusion.execution.target_partitions")?;
                    }
                    Kind::Switch => set(options, name)?,
                    Kind::QueryTimeout => {}
                }
            }
            with_functions_configured(state)
        })?;
        engine.settings = Arc::new(settings.clone());
        Ok(engine)
    }

    /// The session's settings this engine runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Runs a session statement against `settings`: `SET` and `RESET` change them, `SHOW`
    /// reads what this engine (with them in force) uses.
    ///
    /// # Errors
    /// As [`Engine::set_setting`].
    pub async fn run_session_command(
        &self,
        command: &SessionCommand,
        settings: &mut Settings,
    ) -> Result<RecordBatch> {
        match command {
            SessionCommand::Set { name, value } => {
                self.set_setting(settings, name, value).await?;
                let (name, _) = kind_of(name).ok_or_else(|| refused(name))?;
                let shown = settings
                    .0
                    .get(&name)
                    .cloned()
                    .unwrap_or_else(|| "DEFAULT".into());
                super::ddl::message(format!("SET {name} = {shown}"))
            }
            SessionCommand::Reset(name) => {
                settings.reset(name.as_deref())?;
                super::ddl::message(match name {
                    Some(name) => format!("RESET {name}"),
                    None => "RESET ALL".to_string(),
                })
            }
            SessionCommand::Show(name) => {
                self.with_settings(settings)?.show_settings(name.as_deref())
            }
        }
    }

    /// Runs `sql` as [`Engine::query`] does, in a session with `settings`, which a session
    /// statement changes.
    ///
    /// # Errors
    /// As [`Engine::query`] and [`Engine::set_setting`].
    pub async fn query_in_session(
        &self,
        sql: &str,
        settings: &mut Settings,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let engine = self.with_settings(settings)?;
        match engine.prepare(sql, None).await? {
            super::Statement::Command(super::ddl::Command::Session(command)) => {
                let batch = self.run_session_command(&command, settings).await?;
                Ok((batch.schema(), vec![batch]))
            }
            _ => engine.query(sql).await,
        }
    }

    /// `SHOW name` / `SHOW SESSION` with this engine's settings: name, value in force, the
    /// server's value and what the setting does.
    pub(crate) fn show_settings(&self, name: Option<&str>) -> Result<RecordBatch> {
        let server_timeout = self
            .shared
            .admission
            .limits()
            .query_timeout
            .map_or_else(|| "none".to_string(), |t| format!("{}s", t.as_secs_f64()));
        let options = self.state.config().options();
        let now = switch_values(options);
        let value_in = |values: &[(String, String)], key: &str| {
            values
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let mut rows: Vec<[String; 4]> = vec![
            [
                TIME_ZONE.into(),
                options
                    .execution
                    .time_zone
                    .clone()
                    .unwrap_or_else(|| "UTC".into()),
                "UTC".into(),
                "The zone now() and timestamps with a zone are given in".into(),
            ],
            [
                SCHEMA.into(),
                self.default_database(),
                super::DEFAULT_DATABASE.into(),
                "The database unqualified table names resolve in".into(),
            ],
            [
                TARGET_PARTITIONS.into(),
                options.execution.target_partitions.to_string(),
                self.shared.target_partitions.to_string(),
                "How many partitions a query's scans and joins are split into".into(),
            ],
            [
                QUERY_TIMEOUT.into(),
                self.settings
                    .0
                    .get(QUERY_TIMEOUT)
                    .cloned()
                    .unwrap_or_else(|| server_timeout.clone()),
                server_timeout,
                "The time a query may run (a session may only lower the server's)".into(),
            ],
        ];
        for (key, description) in switches() {
            rows.push([
                format!("tarn.{key}"),
                value_in(&now, &key),
                value_in(&self.shared.switches, &key),
                description,
            ]);
        }
        if let Some(name) = name {
            let (canonical, _) = kind_of(name).ok_or_else(|| refused(name))?;
            rows.retain(|r| r[0] == canonical);
        }
        let column = |i: usize| -> Arc<dyn arrow::array::Array> {
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r[i].as_str()),
            ))
        };
        Ok(RecordBatch::try_new(
            show_schema(),
            vec![column(0), column(1), column(2), column(3)],
        )?)
    }
}

/// The columns of `SHOW SESSION` and `SHOW <setting>`.
pub(crate) fn show_schema() -> SchemaRef {
    Arc::new(Schema::new(
        ["name", "value", "default", "description"]
            .map(|n| Field::new(n, DataType::Utf8, false))
            .to_vec(),
    ))
}

/// `state` with the functions that read the configuration (`now()`'s time zone, …) made
/// again from its settings, as DataFusion's own `SET` does.
fn with_functions_configured(mut state: SessionState) -> Result<SessionState> {
    let updated: Vec<_> = state
        .scalar_functions()
        .values()
        .filter_map(|f| f.inner().with_updated_config(state.config().options()))
        .map(Arc::new)
        .collect();
    for function in updated {
        state.register_udf(function)?;
    }
    Ok(state)
}

/// Recognises a session statement; `None` for any other statement (`SHOW ALL` and
/// `SHOW datafusion.…` stay DataFusion's).
///
/// # Errors
/// [`Error::Sql`] for a `SET` whose value is not a literal.
pub(crate) fn recognise(statement: &DFStatement) -> Result<Option<SessionCommand>> {
    let statement = match statement {
        DFStatement::Reset(ResetStatement::Variable(name)) => {
            return Ok(Some(reset(name)));
        }
        DFStatement::Statement(s) => s.as_ref(),
        _ => return Ok(None),
    };
    Ok(match statement {
        Statement::Set(Set::SingleAssignment {
            variable, values, ..
        }) => {
            let value = values.iter().map(value_text).collect::<Result<Vec<_>>>()?;
            Some(SessionCommand::Set {
                name: variable.to_string(),
                value: value.join(", "),
            })
        }
        Statement::Set(Set::SetTimeZone { value, .. }) => Some(SessionCommand::Set {
            name: TIME_ZONE.into(),
            value: value_text(value)?,
        }),
        Statement::Use(Use::Object(name) | Use::Schema(name) | Use::Database(name)) => {
            Some(SessionCommand::Set {
                name: SCHEMA.into(),
                value: name
                    .0
                    .last()
                    .map(|p| p.to_string())
                    .unwrap_or_default()
                    .trim_matches('"')
                    .to_string(),
            })
        }
        Statement::ShowVariable { variable } => {
            let words: Vec<&str> = variable.iter().map(|i| i.value.as_str()).collect();
            // `SHOW TIME ZONE` is two words; `SHOW tarn.reorder_joins` one dotted name.
            let (spaced, dotted) = (words.join(" "), words.join("."));
            if spaced.eq_ignore_ascii_case("session") {
                Some(SessionCommand::Show(None))
            } else {
                [spaced, dotted]
                    .into_iter()
                    .find(|n| is_session_setting(n))
                    .map(|n| SessionCommand::Show(Some(n)))
            }
        }
        _ => None,
    })
}

/// `RESET name`, `RESET ALL`, and Trino's `RESET SESSION name` (DataFusion's parser reads
/// the last as one dotted name).
fn reset(name: &ObjectName) -> SessionCommand {
    let mut parts: Vec<String> = name.0.iter().map(|p| p.to_string()).collect();
    if parts.len() > 1 && parts[0].eq_ignore_ascii_case("session") {
        parts.remove(0);
    }
    let name = parts.join(".");
    if name.eq_ignore_ascii_case("all") {
        SessionCommand::Reset(None)
    } else {
        SessionCommand::Reset(Some(name))
    }
}

/// A `SET` value as text: strings without their quotes, numbers, booleans and names as
/// written.
fn value_text(expr: &Expr) -> Result<String> {
    match expr {
        Expr::Value(v) => Ok(match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        }),
        Expr::Identifier(i) => Ok(i.value.clone()),
        Expr::UnaryOp { .. } => Ok(expr.to_string().replace(' ', "")),
        other => Err(Error::Sql(format!(
            "SET takes a literal value, not '{other}'"
        ))),
    }
}
