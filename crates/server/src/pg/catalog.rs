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
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::TableProvider;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProviderList, SchemaProvider,
};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
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
        // Postgres' untyped literals are read before DataFusion types them.
        let mut rules = state.analyzer().rules.clone();
        rules.insert(0, Arc::new(super::coerce::BooleanLiterals));
        let state = SessionStateBuilder::new_from_existing(state)
            .with_analyzer_rules(rules)
            .build();
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
        if let Some(catalog) = context.catalog(CATALOG_NAME)
            && let Some(pg_catalog) = catalog.schema(PG_CATALOG)
        {
            catalog
                .register_schema(
                    PG_CATALOG,
                    Arc::new(KeyTables::new(pg_catalog, Arc::downgrade(&catalog))?),
                )
                .map_err(|e| Error::Internal(format!("installing pg_catalog key tables: {e}")))?;
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

const PG_CATALOG: &str = "pg_catalog";

/// `pg_catalog` with `pg_attribute`'s type modifiers filled in
/// ([`super::attributes`]), `pg_class` with the columns clients read, and
/// `pg_constraint` and `pg_index` typed as Postgres types them
/// (`conkey int2[]`, `indkey int2vector`, not the text `'{1,2}'`), so clients'
/// `attnum = ANY(conkey)` and `unnest(indkey)` plan. Tarn's tables have no constraints or
/// indexes, so both are empty.
#[derive(Debug)]
struct KeyTables {
    inner: Arc<dyn SchemaProvider>,
    tables: HashMap<&'static str, Arc<dyn TableProvider>>,
    /// Tarn's catalog, for `pg_attribute`'s type modifiers.
    tarn: std::sync::Weak<dyn CatalogProvider>,
}

impl KeyTables {
    fn new(
        inner: Arc<dyn SchemaProvider>,
        tarn: std::sync::Weak<dyn CatalogProvider>,
    ) -> Result<Self> {
        let mut tables = HashMap::new();
        for (name, schema) in [("pg_constraint", pg_constraint()), ("pg_index", pg_index())] {
            let table = MemTable::try_new(Arc::new(schema), vec![vec![]])
                .map_err(|e| Error::Internal(format!("building {name}: {e}")))?;
            tables.insert(name, Arc::new(table) as Arc<dyn TableProvider>);
        }
        Ok(Self {
            inner,
            tables,
            tarn,
        })
    }
}

#[async_trait::async_trait]
impl SchemaProvider for KeyTables {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let name = name.to_ascii_lowercase();
        if let Some(table) = self.tables.get(name.as_str()) {
            return Ok(Some(Arc::clone(table)));
        }
        let table = self.inner.table(&name).await?;
        match (name.as_str(), table) {
            ("pg_class", Some(table)) => with_acl_and_options(table).map(Some),
            ("pg_attribute", Some(table)) => Ok(Some(Arc::new(super::attributes::Attributes {
                inner: table,
                pg_catalog: Arc::clone(&self.inner),
                tarn: self.tarn.clone(),
            }))),
            (_, table) => Ok(table),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// `pg_class` with the `relacl` and `reloptions` columns clients select (SQLAlchemy's
/// index reflection reads `reloptions`): NULL, as for a relation with default access and
/// options.
fn with_acl_and_options(table: Arc<dyn TableProvider>) -> DfResult<Arc<dyn TableProvider>> {
    use datafusion::datasource::{ViewTable, provider_as_source};
    use datafusion::logical_expr::{LogicalPlanBuilder, cast, col, lit};
    let schema = table.schema();
    let mut columns: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| col(datafusion::common::Column::new_unqualified(f.name())))
        .collect();
    for extra in ["relacl", "reloptions"] {
        if schema.field_with_name(extra).is_err() {
            let text_list = DataType::new_list(DataType::Utf8, true);
            columns.push(cast(lit(ScalarValue::Null), text_list).alias(extra));
        }
    }
    let plan = LogicalPlanBuilder::scan("pg_class", provider_as_source(table), None)?
        .project(columns)?
        .build()?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

fn list(name: &str, item: DataType) -> Field {
    Field::new(name, DataType::new_list(item, true), true)
}

fn required(name: &str, data_type: DataType) -> Field {
    Field::new(name, data_type, false)
}

fn oid(name: &str) -> Field {
    use datafusion_postgres::datafusion_pg_catalog::pg_catalog::oid_field::{kind, oid_field};
    oid_field(name, kind::OID, false)
}

/// `pg_constraint`'s columns and Postgres types.
fn pg_constraint() -> Schema {
    let text = |name: &str| required(name, DataType::Utf8);
    let flag = |name: &str| required(name, DataType::Boolean);
    Schema::new(vec![
        oid("oid"),
        text("conname"),
        oid("connamespace"),
        text("contype"),
        flag("condeferrable"),
        flag("condeferred"),
        flag("convalidated"),
        oid("conrelid"),
        oid("contypid"),
        oid("conindid"),
        oid("conparentid"),
        oid("confrelid"),
        text("confupdtype"),
        text("confdeltype"),
        text("confmatchtype"),
        flag("conislocal"),
        required("coninhcount", DataType::Int16),
        flag("connoinherit"),
        list("conkey", DataType::Int16),
        list("confkey", DataType::Int16),
        list("conpfeqop", DataType::Int32),
        list("conppeqop", DataType::Int32),
        list("conffeqop", DataType::Int32),
        list("confdelsetcols", DataType::Int16),
        list("conexclop", DataType::Int32),
        Field::new("conbin", DataType::Utf8, true),
    ])
}

/// `pg_index`'s columns and Postgres types.
fn pg_index() -> Schema {
    let flag = |name: &str| required(name, DataType::Boolean);
    Schema::new(vec![
        oid("indexrelid"),
        oid("indrelid"),
        required("indnatts", DataType::Int16),
        required("indnkeyatts", DataType::Int16),
        flag("indisunique"),
        flag("indnullsnotdistinct"),
        flag("indisprimary"),
        flag("indisexclusion"),
        flag("indimmediate"),
        flag("indisclustered"),
        flag("indisvalid"),
        flag("indcheckxmin"),
        flag("indisready"),
        flag("indislive"),
        flag("indisreplident"),
        list("indkey", DataType::Int16),
        list("indcollation", DataType::Int32),
        list("indclass", DataType::Int32),
        list("indoption", DataType::Int16),
        Field::new("indexprs", DataType::Utf8, true),
        Field::new("indpred", DataType::Utf8, true),
    ])
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
