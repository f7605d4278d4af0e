//! What Postgres clients read to find their way: `pg_catalog` (from
//! `datafusion-pg-catalog`, built from Tarn's catalog as the session sees it), the
//! functions psql, SQLAlchemy, Grafana and Metabase call while connecting and browsing,
//! and a `version()` that says Postgres and Tarn.
//!
//! The Postgres session's state is the engine's with one difference: its `tarn`
//! catalog is a view of Tarn's that also holds the `pg_catalog` schema. Tarn's catalog
//! itself and the other front doors' sessions are left as they are.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProviderList, SchemaProvider,
};
use datafusion::common::ScalarValue;
use datafusion::error::Result as DfResult;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;

use tarn_lake::engine::{CATALOG_NAME, Engine};
use tarn_lake::error::{Error, Result};

/// The Postgres release whose protocol and catalog Tarn answers as; clients parse it from
/// `server_version` and `version()`.
pub(crate) const POSTGRES_VERSION: &str = "16.6";

/// `server_version` as clients see it: a Postgres version they can parse, then Tarn's.
pub(crate) fn server_version() -> String {
    format!("{POSTGRES_VERSION} (Tarn {})", env!("CARGO_PKG_VERSION"))
}

/// The engine Postgres connections run on: `engine` with `pg_catalog` and the Postgres
/// functions in its session.
///
/// # Errors
/// [`Error::Internal`] when the catalog cannot be installed.
pub(crate) fn postgres_engine(engine: &Engine) -> Result<Engine> {
    engine.with_state(|state| {
        let state = with_overlay(state)?;
        let context = SessionContext::new_with_state(state);
        setup_pg_catalog(&context, CATALOG_NAME, EmptyContextProvider)
            .map_err(|e| Error::Internal(format!("installing pg_catalog: {e}")))?;
        if let Some(catalog) = context.catalog(CATALOG_NAME) {
            let tarn = context
                .state()
                .catalog_list()
                .catalog(CATALOG_NAME)
                .ok_or_else(|| Error::Internal("no tarn catalog".into()))?;
            catalog
                .register_schema(
                    super::information_schema::SCHEMA,
                    Arc::new(super::information_schema::InformationSchema { catalog: tarn }),
                )
                .map_err(|e| Error::Internal(format!("installing information_schema: {e}")))?;
        }
        context.register_udf(version_udf());
        for name in ["pg_type_is_visible", "pg_function_is_visible"] {
            context.register_udf(visible_udf(name));
        }
        Ok(context.state())
    })
}

/// `state` with its catalogs replaced by ones that take extra schemas.
fn with_overlay(state: SessionState) -> Result<SessionState> {
    let catalogs = MemoryCatalogProviderList::new();
    for name in state.catalog_list().catalog_names() {
        if let Some(inner) = state.catalog_list().catalog(&name) {
            catalogs.register_catalog(
                name,
                Arc::new(Overlay {
                    inner,
                    extra: RwLock::default(),
                }),
            );
        }
    }
    if catalogs.catalog(CATALOG_NAME).is_none() {
        return Err(Error::Internal(format!(
            "the session has no '{CATALOG_NAME}' catalog"
        )));
    }
    Ok(SessionStateBuilder::new_from_existing(state)
        .with_catalog_list(Arc::new(catalogs))
        .build())
}

/// A catalog with schemas of its own (`pg_catalog`) over another catalog's.
#[derive(Debug)]
struct Overlay {
    inner: Arc<dyn CatalogProvider>,
    extra: RwLock<HashMap<String, Arc<dyn SchemaProvider>>>,
}

impl CatalogProvider for Overlay {
    fn schema_names(&self) -> Vec<String> {
        let mut names = self.inner.schema_names();
        if let Ok(extra) = self.extra.read() {
            names.extend(
                extra
                    .keys()
                    .filter(|k| *k != super::information_schema::SCHEMA)
                    .cloned(),
            );
        }
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.extra
            .read()
            .ok()
            .and_then(|extra| extra.get(name).cloned())
            .or_else(|| self.inner.schema(name))
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> DfResult<Option<Arc<dyn SchemaProvider>>> {
        let mut extra = self.extra.write().map_err(|_| {
            datafusion::error::DataFusionError::Internal("catalog overlay lock poisoned".into())
        })?;
        Ok(extra.insert(name.to_string(), schema))
    }
}

/// `version()`: `PostgreSQL 16.6 (Tarn x.y.z) …`, the shape clients' version parsers
/// expect (SQLAlchemy and Metabase read the number after `PostgreSQL`).
fn version_udf() -> datafusion::logical_expr::ScalarUDF {
    let text = format!(
        "PostgreSQL {} on {}, compiled by rustc (a Postgres-compatible front door of Tarn, \
         a SQL engine over data lakes)",
        server_version(),
        std::env::consts::ARCH
    );
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(text.clone()))))
        }),
    )
}

/// `pg_type_is_visible(oid)` and the like: every type and function of Tarn's catalog is
/// visible on the search path (NULL for a NULL oid, as in Postgres).
fn visible_udf(name: &str) -> datafusion::logical_expr::ScalarUDF {
    create_udf(
        name,
        vec![DataType::Int64],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let Some(arg) = args.first() else {
                return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(None)));
            };
            Ok(match arg {
                ColumnarValue::Scalar(v) => {
                    ColumnarValue::Scalar(ScalarValue::Boolean((!v.is_null()).then_some(true)))
                }
                ColumnarValue::Array(a) => {
                    let visible: datafusion::arrow::array::BooleanArray = (0..a.len())
                        .map(|i| (!a.is_null(i)).then_some(true))
                        .collect();
                    ColumnarValue::Array(Arc::new(visible))
                }
            })
        }),
    )
}

/// `engine` with `current_setting(name)` answering from `settings` (a session's), and
/// `set_config('jit', …)` accepted (Tarn has no JIT to switch; drivers such as asyncpg
/// turn it off around their type queries). Other `set_config` calls are refused: a
/// setting is changed with `SET`.
///
/// # Errors
/// [`Error::Internal`] when the functions cannot be registered.
pub(crate) fn with_settings(
    engine: &Engine,
    settings: std::collections::BTreeMap<String, String>,
) -> Result<Engine> {
    use datafusion::execution::FunctionRegistry;
    let settings = Arc::new(settings);
    engine.with_state(|mut state| {
        let current = {
            let settings = Arc::clone(&settings);
            create_udf(
                "current_setting",
                vec![DataType::Utf8],
                DataType::Utf8,
                Volatility::Stable,
                Arc::new(move |args: &[ColumnarValue]| {
                    each_text(args, |name| {
                        let key = name.to_ascii_lowercase();
                        settings.get(&key).cloned().map(Some).ok_or_else(|| {
                            datafusion::error::DataFusionError::Execution(format!(
                                "unrecognized configuration parameter \"{name}\"; SHOW ALL \
                                 is not served, see the README's Postgres section"
                            ))
                        })
                    })
                }),
            )
        };
        let set_config = create_udf(
            "set_config",
            vec![DataType::Utf8, DataType::Utf8, DataType::Boolean],
            DataType::Utf8,
            Volatility::Volatile,
            Arc::new(|args: &[ColumnarValue]| {
                let value = args.get(1).cloned();
                each_text(args.get(..1).unwrap_or_default(), |name| {
                    if name.eq_ignore_ascii_case("jit") {
                        Ok(match &value {
                            Some(ColumnarValue::Scalar(v)) => v.to_string().into(),
                            _ => Some("off".to_string()),
                        })
                    } else {
                        Err(datafusion::error::DataFusionError::Execution(format!(
                            "set_config('{name}', …) is not supported; use SET {name} = …"
                        )))
                    }
                })
            }),
        );
        for udf in [current, set_config] {
            state
                .register_udf(Arc::new(udf))
                .map_err(|e| Error::Internal(format!("registering a Postgres function: {e}")))?;
        }
        Ok(state)
    })
}

/// Applies `f` to each text value of the first argument (scalar or array).
fn each_text(
    args: &[ColumnarValue],
    f: impl Fn(&str) -> DfResult<Option<String>>,
) -> DfResult<ColumnarValue> {
    let Some(arg) = args.first() else {
        return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)));
    };
    let array = arg.to_array(1)?;
    let text = datafusion::arrow::compute::cast(&array, &DataType::Utf8)?;
    let text = datafusion::common::cast::as_string_array(&text)?;
    let out: datafusion::arrow::array::StringArray = text
        .iter()
        .map(|v| v.map_or(Ok(None), &f))
        .collect::<DfResult<_>>()?;
    Ok(match arg {
        ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?),
        ColumnarValue::Array(_) => ColumnarValue::Array(Arc::new(out)),
    })
}
