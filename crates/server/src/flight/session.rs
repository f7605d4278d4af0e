//! Flight session options (`SetSessionOptions`, `GetSessionOptions`, `CloseSession`), as
//! JDBC (`catalog=`), ADBC (`catalog`, `schema`) and other clients send them.
//!
//! arrow-flight has no types for these actions, so the messages are declared here from
//! Flight.proto. Sessions are stateless like tickets: the options live in the
//! `arrow_flight_session_id` cookie itself, signed with the server's secret, so any node
//! accepts them and the server keeps nothing per session. A client that keeps cookies
//! (JDBC always; ADBC with its cookie middleware) sends the options back with every call.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tonic::Request;

use crate::auth::Signer;
use tarn_lake::engine::CATALOG_NAME;

/// The cookie that carries the session.
pub const COOKIE: &str = "arrow_flight_session_id";

/// `SessionOptionValue` from Flight.proto.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionOptionValue {
    #[prost(oneof = "OptionValue", tags = "1, 2, 3, 4, 5")]
    pub option_value: Option<OptionValue>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum OptionValue {
    #[prost(string, tag = "1")]
    StringValue(String),
    #[prost(bool, tag = "2")]
    BoolValue(bool),
    #[prost(sfixed64, tag = "3")]
    Int64Value(i64),
    #[prost(double, tag = "4")]
    DoubleValue(f64),
    #[prost(message, tag = "5")]
    StringListValue(StringListValue),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StringListValue {
    #[prost(string, repeated, tag = "1")]
    pub values: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSessionOptionsRequest {
    #[prost(map = "string, message", tag = "1")]
    pub session_options: HashMap<String, SessionOptionValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSessionOptionsResult {
    #[prost(map = "string, message", tag = "1")]
    pub errors: HashMap<String, SetSessionOptionsError>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSessionOptionsError {
    /// 1: invalid name, 2: invalid value, 3: error.
    #[prost(int32, tag = "1")]
    pub value: i32,
}

pub const INVALID_NAME: i32 = 1;
pub const INVALID_VALUE: i32 = 2;

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetSessionOptionsResult {
    #[prost(map = "string, message", tag = "1")]
    pub session_options: HashMap<String, SessionOptionValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CloseSessionResult {
    /// 1: closed.
    #[prost(int32, tag = "1")]
    pub status: i32,
}

pub const CLOSED: i32 = 1;

/// The options of a session: string values by name (`catalog`, `schema`).
pub type Options = BTreeMap<String, String>;

/// The session options a request carries in its cookie (empty when none, or when the
/// cookie is not one this server signed).
pub fn from_request<T>(request: &Request<T>, signer: &Signer) -> Options {
    request
        .metadata()
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .and_then(|(_, value)| decode(value, signer))
        .unwrap_or_default()
}

fn decode(value: &str, signer: &Signer) -> Option<Options> {
    let sealed = URL_SAFE_NO_PAD.decode(value).ok()?;
    serde_json::from_slice(signer.open(&sealed)?).ok()
}

/// The `set-cookie` value that stores `options` (or ends the session when `None`).
pub fn set_cookie(options: Option<&Options>, signer: &Signer) -> String {
    match options {
        Some(options) => {
            let json = serde_json::to_vec(options).unwrap_or_default();
            format!(
                "{COOKIE}={}; Path=/; HttpOnly",
                URL_SAFE_NO_PAD.encode(signer.seal(&json))
            )
        }
        None => format!("{COOKIE}=; Path=/; Max-Age=0"),
    }
}

/// The option that sets a time limit for the session's queries: a duration (`30s`, `5m`)
/// or a number of seconds.
pub const QUERY_TIMEOUT: &str = "query_timeout";

/// A `query_timeout` value as the text kept in the session, if it is a positive duration.
fn timeout_text(value: OptionValue) -> Option<String> {
    let text = match value {
        OptionValue::StringValue(s) => s.trim().to_string(),
        OptionValue::Int64Value(n) => format!("{n}s"),
        OptionValue::DoubleValue(x) if x.is_finite() && x > 0.0 => {
            format!("{}ms", (x * 1000.0).round() as u64)
        }
        _ => return None,
    };
    let parsed = tarn_lake::engine::limits::parse_duration(&text).ok()?;
    (!parsed.is_zero()).then_some(text)
}

/// The time limit the session's options set, if any.
pub fn timeout(options: &Options) -> Option<std::time::Duration> {
    options
        .get(QUERY_TIMEOUT)
        .and_then(|t| tarn_lake::engine::limits::parse_duration(t).ok())
}

/// Applies a `SetSessionOptions` request to `options`; returns the per-option errors.
/// `database_exists` checks a `schema` value.
pub fn apply(
    options: &mut Options,
    request: SetSessionOptionsRequest,
    database_exists: impl Fn(&str) -> bool,
) -> SetSessionOptionsResult {
    let mut errors = HashMap::new();
    let mut fail = |name: &str, value: i32| {
        errors.insert(name.to_string(), SetSessionOptionsError { value });
    };
    for (name, value) in request.session_options {
        let key = name.to_ascii_lowercase();
        match (key.as_str(), value.option_value) {
            // An empty value unsets the option.
            ("catalog" | "schema", None) => {
                options.remove(&key);
            }
            ("catalog", Some(OptionValue::StringValue(v))) => {
                if v.is_empty() || v == CATALOG_NAME {
                    options.insert(key, CATALOG_NAME.to_string());
                } else {
                    fail(&name, INVALID_VALUE);
                }
            }
            ("schema", Some(OptionValue::StringValue(v))) => {
                if v.is_empty() {
                    options.remove(&key);
                } else if database_exists(&v) {
                    options.insert(key, v);
                } else {
                    fail(&name, INVALID_VALUE);
                }
            }
            ("catalog" | "schema", Some(_)) => fail(&name, INVALID_VALUE),
            // A time limit for the session's queries (it only ever lowers the server's).
            (QUERY_TIMEOUT, None) => {
                options.remove(&key);
            }
            (QUERY_TIMEOUT, Some(value)) => match timeout_text(value) {
                Some(text) => {
                    options.insert(key, text);
                }
                None => fail(&name, INVALID_VALUE),
            },
            _ => fail(&name, INVALID_NAME),
        }
    }
    SetSessionOptionsResult { errors }
}

/// The options as a `GetSessionOptions` result.
pub fn to_result(options: &Options) -> GetSessionOptionsResult {
    GetSessionOptionsResult {
        session_options: options
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    SessionOptionValue {
                        option_value: Some(OptionValue::StringValue(v.clone())),
                    },
                )
            })
            .collect(),
    }
}
