//! Flight session options (`SetSessionOptions`, `GetSessionOptions`, `CloseSession`), as
//! JDBC (`catalog=`), ADBC (`catalog`, `schema`) and other clients send them.
//!
//! arrow-flight has no types for these actions, so the messages are declared here from
//! Flight.proto. Sessions are stateless like tickets: the options live in the
//! `arrow_flight_session_id` cookie itself, signed with the server's secret, so any node
//! accepts them and the server keeps nothing per session. A client that keeps cookies
//! (JDBC always; ADBC with its cookie middleware) sends the options back with every call.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::sync::{Arc, Mutex};

use tonic::Request;

use crate::auth::Signer;
use tarn_lake::engine::settings::{Settings, is_session_setting};
use tarn_lake::engine::{CATALOG_NAME, Engine};

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

/// A session's options: the catalog a client named, and the settings it changed with
/// `SetSessionOptions` or SQL (`SET`, `USE`, `RESET`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Options {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<String>,
    #[serde(flatten)]
    pub settings: Settings,
}

/// A request's session: its options, and the options a statement of the request changed
/// them to (answered with a `set-cookie` header).
#[derive(Debug, Clone, Default)]
pub struct Session {
    pub options: Options,
    changed: Arc<Mutex<Option<Options>>>,
}

impl Session {
    /// The session of a request carrying `options`.
    pub fn new(options: Options) -> Self {
        Self {
            options,
            changed: Arc::default(),
        }
    }

    /// Records that a statement changed the session's settings.
    pub fn change(&self, settings: Settings) {
        let options = Options {
            settings,
            ..self.options.clone()
        };
        if let Ok(mut changed) = self.changed.lock() {
            *changed = Some(options);
        }
    }

    /// The options a statement changed the session to, if one did.
    pub fn changed(&self) -> Option<Options> {
        self.changed.lock().ok()?.clone()
    }
}

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

/// A session option's value as the text a setting takes.
fn option_text(value: OptionValue) -> Option<String> {
    match value {
        OptionValue::StringValue(s) => Some(s),
        OptionValue::BoolValue(b) => Some(b.to_string()),
        OptionValue::Int64Value(n) => Some(n.to_string()),
        OptionValue::DoubleValue(x) if x.is_finite() => Some(x.to_string()),
        _ => None,
    }
}

/// Applies a `SetSessionOptions` request to `options`, checking each setting on `engine`
/// (which knows the databases and the server's bounds); returns the per-option errors.
pub async fn apply(
    options: &mut Options,
    request: SetSessionOptionsRequest,
    engine: &Engine,
) -> SetSessionOptionsResult {
    let mut errors = HashMap::new();
    let mut fail = |name: &str, value: i32| {
        errors.insert(name.to_string(), SetSessionOptionsError { value });
    };
    for (name, value) in request.session_options {
        let key = name.to_ascii_lowercase();
        let text = value.option_value.and_then(option_text);
        if key == "catalog" {
            match text.as_deref() {
                None | Some("") => options.catalog = None,
                Some(CATALOG_NAME) => options.catalog = Some(CATALOG_NAME.to_string()),
                Some(_) => fail(&name, INVALID_VALUE),
            }
        } else if !is_session_setting(&key) {
            fail(&name, INVALID_NAME);
        } else {
            // An empty value unsets the option.
            let result = match text.as_deref() {
                None | Some("") => options.settings.reset(Some(&key)),
                Some(text) => engine.set_setting(&mut options.settings, &key, text).await,
            };
            if result.is_err() {
                fail(&name, INVALID_VALUE);
            }
        }
    }
    SetSessionOptionsResult { errors }
}

/// The options as a `GetSessionOptions` result.
pub fn to_result(options: &Options) -> GetSessionOptionsResult {
    let string = |v: &str| SessionOptionValue {
        option_value: Some(OptionValue::StringValue(v.to_string())),
    };
    let mut session_options: HashMap<String, SessionOptionValue> = options
        .settings
        .iter()
        .map(|(k, v)| (k.to_string(), string(v)))
        .collect();
    if let Some(catalog) = &options.catalog {
        session_options.insert("catalog".into(), string(catalog));
    }
    GetSessionOptionsResult { session_options }
}
