//! The catalog over HTTP, for functions and the console: `GET /v1/databases`,
//! `GET /v1/tables/{db}` and `GET /v1/tables/{db}/{table}` (columns with their Arrow
//! types, partition columns, size, partitions, schema history). Callers authenticate as
//! for queries; every role may read the catalog.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::query::{Api, error_response};
use tarn_lake::catalog::{TableEntry, TableSize};
use tarn_lake::error::{Error, Result};

/// `GET /v1/databases`: each database with its number of tables.
#[utoipa::path(get, path = "/v1/databases", tag = "catalog", responses(
    (status = 200, description = "`{\"databases\": [{\"name\", \"tables\"}]}`", body = Object),
    super::openapi::Errors), security((), ("bearer" = []), ("basic" = [])))]
pub(crate) async fn databases(State(api): State<Api>, headers: HeaderMap) -> Response {
    answer(list_databases(&api, &headers).await)
}

/// `GET /v1/tables/{db}`: a database's tables and views.
#[utoipa::path(get, path = "/v1/tables/{db}", tag = "catalog",
    params(("db" = String, Path, description = "A database")),
    responses((status = 200, description = "`{\"database\", \"tables\": [{\"name\", \"type\" \
        (TABLE or VIEW), \"format\", \"location\", \"partition_columns\", \"files\", \"rows\", \
        \"bytes\", \"partitions\", \"version\", \"updated_at\"}]}`", body = Object),
    super::openapi::Errors), security((), ("bearer" = []), ("basic" = [])))]
pub(crate) async fn tables(
    State(api): State<Api>,
    Path(database): Path<String>,
    headers: HeaderMap,
) -> Response {
    answer(list_tables(&api, &headers, &database).await)
}

/// `GET /v1/tables/{db}/{table}`: a table with its columns and schema history.
#[utoipa::path(get, path = "/v1/tables/{db}/{table}", tag = "catalog",
    params(("db" = String, Path, description = "A database"),
           ("table" = String, Path, description = "A table or view of it")),
    responses((status = 200, description = "The table as `/v1/tables/{db}` lists it, with \
        `columns` (name, Arrow type, nullable) and `schema_history`", body = Object),
    super::openapi::Errors), security((), ("bearer" = []), ("basic" = [])))]
pub(crate) async fn table(
    State(api): State<Api>,
    Path((database, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    answer(describe(&api, &headers, &database, &name).await)
}

fn answer(result: Result<Value>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(e) => error_response(e),
    }
}

/// The user's tables (rollups' storage left out), after authenticating the caller.
async fn visible_tables(api: &Api, headers: &HeaderMap) -> Result<Vec<TableEntry>> {
    api.authenticate(headers)?;
    api.engine.refresh().await?;
    Ok(api
        .engine
        .tables()
        .into_iter()
        .filter(|t| !tarn_lake::rollup::is_storage_table(&t.name))
        .collect())
}

async fn list_databases(api: &Api, headers: &HeaderMap) -> Result<Value> {
    let tables = visible_tables(api, headers).await?;
    let databases: Vec<Value> = api
        .engine
        .databases()
        .into_iter()
        .map(|name| {
            let count = tables.iter().filter(|t| t.database == name).count();
            json!({"name": name, "tables": count})
        })
        .collect();
    Ok(json!({ "databases": databases }))
}

async fn list_tables(api: &Api, headers: &HeaderMap, database: &str) -> Result<Value> {
    let tables = visible_tables(api, headers).await?;
    if !api.engine.databases().iter().any(|d| d == database) {
        return Err(Error::TableNotFound {
            name: format!("{database} (no such database; GET /v1/databases lists them)"),
        });
    }
    let sizes = api.engine.catalog().table_sizes().await?;
    let mut listed: Vec<Value> = tables
        .iter()
        .filter(|t| t.database == database)
        .map(|t| summary(t, sizes.get(&t.id).copied().unwrap_or_default()))
        .collect();
    for view in api.engine.catalog().views().await? {
        if view.definition.database == database {
            listed.push(view_summary(&view));
        }
    }
    Ok(json!({ "database": database, "tables": listed }))
}

/// A view as `GET /v1/tables` shows it: its query and the columns it was created with.
fn view_summary(view: &tarn_lake::catalog::ViewRecord) -> Value {
    let d = &view.definition;
    let columns: Vec<Value> = d
        .columns
        .iter()
        .map(|c| json!({"name": c.name, "type": c.data_type}))
        .collect();
    json!({
        "database": d.database,
        "name": d.name,
        "type": "VIEW",
        "query": d.query,
        "columns": columns,
        "created_at": view.created_at,
        "updated_at": view.updated_at,
    })
}

async fn describe(api: &Api, headers: &HeaderMap, database: &str, name: &str) -> Result<Value> {
    let tables = visible_tables(api, headers).await?;
    let Some(table) = tables
        .iter()
        .find(|t| t.database == database && t.name == name)
    else {
        let views = api.engine.catalog().views().await?;
        return views
            .iter()
            .find(|v| v.definition.database == database && v.definition.name == name)
            .map(view_summary)
            .ok_or_else(|| Error::TableNotFound {
                name: format!("{database}.{name} (GET /v1/tables/{database} lists its tables)"),
            });
    };
    let sizes = api.engine.catalog().table_sizes().await?;
    let mut out = summary(table, sizes.get(&table.id).copied().unwrap_or_default());
    let columns: Vec<Value> = table
        .file_schema
        .fields()
        .iter()
        .map(|f| json!({"name": f.name(), "type": f.data_type().to_string(), "nullable": f.is_nullable()}))
        .collect();
    let history: Vec<Value> = api
        .engine
        .catalog()
        .schema_history(table.id)
        .await?
        .into_iter()
        .map(|(version, columns, created_at)| {
            json!({"version": version, "columns": columns, "created_at": created_at})
        })
        .collect();
    if let Value::Object(map) = &mut out {
        map.insert("columns".into(), Value::Array(columns));
        map.insert("schema_history".into(), Value::Array(history));
    }
    Ok(out)
}

fn summary(t: &TableEntry, size: TableSize) -> Value {
    let partition_columns: Vec<Value> = t
        .partition_columns
        .iter()
        .map(|c| json!({"name": c.name, "type": c.data_type.to_string()}))
        .collect();
    json!({
        "database": t.database,
        "name": t.name,
        "type": "TABLE",
        "format": t.format.as_str(),
        "location": t.location,
        "partition_columns": partition_columns,
        "files": size.files,
        "rows": size.rows,
        "bytes": size.bytes,
        "partitions": size.partitions,
        "version": t.version,
        "updated_at": t.updated_at,
    })
}

/// `GET /v1/crawlers`: the catalog's crawlers, with their schedules and last starts.
#[utoipa::path(get, path = "/v1/crawlers", tag = "catalog", responses(
    (status = 200, description = "`{\"crawlers\": [{\"name\", \"location\", \"database\", \
        \"schedule\", \"created_at\", \"last_started_at\"}]}`; `system.crawls` has their runs",
     body = Object),
    super::openapi::Errors), security((), ("bearer" = []), ("basic" = [])))]
pub(crate) async fn crawlers(State(api): State<Api>, headers: HeaderMap) -> Response {
    let listed = async {
        api.authenticate(&headers)?;
        let crawlers: Vec<Value> = api
            .engine
            .catalog()
            .crawlers()
            .await?
            .into_iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "location": c.location,
                    "database": c.database,
                    "schedule": c.schedule,
                    "created_at": c.created_at,
                    "last_started_at": c.last_started_at,
                })
            })
            .collect();
        Ok(json!({ "crawlers": crawlers }))
    };
    answer(listed.await)
}
