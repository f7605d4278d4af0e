//! `CREATE TABLE … AS SELECT` with Athena's properties: the query's rows written as
//! partitioned Parquet (zstd) into the warehouse or an allowed, empty location and
//! registered in one catalog commit, through bulk ingest. `UNLOAD (SELECT …) TO '…'
//! WITH (…)` writes the same files to an allowed, empty location without registering them.
//!
//! ```sql
//! CREATE TABLE [IF NOT EXISTS] db.t
//!   WITH (format = 'PARQUET', partitioned_by = ARRAY['day'],
//!         external_location = 's3://bucket/t/', write_compression = 'ZSTD')
//! AS SELECT …
//! ```
//!
//! `location` is accepted for `external_location`, `partition_by` for `partitioned_by`,
//! `parquet_compression` for `write_compression`, and Hive's `PARTITIONED BY (a, b)`,
//! `STORED AS PARQUET` and `LOCATION '…'`.

use datafusion::sql::sqlparser::ast::{
    CreateTable, CreateTableOptions, Expr as SqlExpr, HiveDistributionStyle, SqlOption, Value,
};
use futures::TryStreamExt;

use super::Engine;
use super::ddl::Command;
use crate::catalog::PartitionColumn;
use crate::error::{Error, Result};

/// What a `CREATE TABLE … AS SELECT` asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateTableAs {
    pub database: String,
    pub name: String,
    /// The query, as SQL.
    pub query: String,
    pub partitioned_by: Vec<String>,
    /// Where the files go (an allowed location); the warehouse when `None`.
    pub location: Option<String>,
    pub if_not_exists: bool,
}

/// What an `UNLOAD` asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Unload {
    /// The query, as SQL.
    pub query: String,
    /// Where the files go (an allowed, empty location).
    pub to: String,
    pub partitioned_by: Vec<String>,
}

/// The text of an option's value (a string, a name, or a number).
fn text(option: &str, value: &SqlExpr) -> Result<String> {
    match value {
        SqlExpr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Ok(s.clone()),
            Value::Number(n, _) => Ok(n.clone()),
            other => Err(Error::Sql(format!("{option} = {other}: expected a string"))),
        },
        SqlExpr::Identifier(i) => Ok(i.value.clone()),
        other => Err(Error::Sql(format!("{option} = {other}: expected a string"))),
    }
}

/// The column names of `partitioned_by = ARRAY['a', 'b']`.
fn names(option: &str, value: &SqlExpr) -> Result<Vec<String>> {
    match value {
        SqlExpr::Array(array) => array.elem.iter().map(|e| text(option, e)).collect(),
        SqlExpr::Tuple(items) => items.iter().map(|e| text(option, e)).collect(),
        single => Ok(vec![text(option, single)?]),
    }
}

/// Recognises `CREATE TABLE … AS SELECT` (`database`/`name` already resolved).
pub(crate) fn recognise(
    create: &CreateTable,
    database: String,
    name: String,
) -> Result<Option<Command>> {
    let Some(query) = &create.query else {
        return Ok(None);
    };
    if create.or_replace || create.temporary || !create.columns.is_empty() {
        return Err(Error::Sql(
            "CREATE TABLE … AS SELECT takes its columns from the query; OR REPLACE, \
             TEMPORARY and column lists are not supported (DROP TABLE first to replace one)"
                .into(),
        ));
    }
    let mut spec = CreateTableAs {
        database,
        name,
        query: query.to_string(),
        partitioned_by: Vec::new(),
        location: create.location.clone(),
        if_not_exists: create.if_not_exists,
    };
    if let HiveDistributionStyle::PARTITIONED { columns } = &create.hive_distribution {
        spec.partitioned_by = columns.iter().map(|c| c.name.value.clone()).collect();
    }
    let options: &[SqlOption] = match &create.table_options {
        CreateTableOptions::With(o)
        | CreateTableOptions::Options(o)
        | CreateTableOptions::TableProperties(o) => o,
        CreateTableOptions::Plain(o) => o,
        CreateTableOptions::None => &[],
    };
    for (key, value) in written_options(options)? {
        if matches!(key.as_str(), "external_location" | "location") {
            spec.location = Some(text(&key, value)?);
        } else if let Some(columns) = file_option(&key, value, "CREATE TABLE … AS SELECT")? {
            spec.partitioned_by = columns;
        }
    }
    Ok(Some(Command::CreateTableAs(Box::new(spec))))
}

/// Recognises `UNLOAD (SELECT …) TO 'location' WITH (format = …, partitioned_by = …)`.
pub(crate) fn recognise_unload(
    query: Option<&datafusion::sql::sqlparser::ast::Query>,
    to: &datafusion::sql::sqlparser::ast::Ident,
    with: &[SqlOption],
) -> Result<Command> {
    let Some(query) = query else {
        return Err(Error::Sql(
            "UNLOAD takes a query in parentheses: UNLOAD (SELECT …) TO '…'".into(),
        ));
    };
    let mut spec = Unload {
        query: query.to_string(),
        to: to.value.clone(),
        partitioned_by: Vec::new(),
    };
    for (key, value) in written_options(with)? {
        if let Some(columns) = file_option(&key, value, "UNLOAD")? {
            spec.partitioned_by = columns;
        }
    }
    Ok(Command::Unload(Box::new(spec)))
}

/// The options as lowercase keys with their values.
fn written_options(options: &[SqlOption]) -> Result<Vec<(String, &SqlExpr)>> {
    options
        .iter()
        .map(|option| match option {
            SqlOption::KeyValue { key, value } => Ok((key.value.to_ascii_lowercase(), value)),
            other => Err(Error::Sql(format!("option {other} is not key = value"))),
        })
        .collect()
}

/// Checks an option about the files a statement writes; returns the partition columns
/// when it is `partitioned_by`.
fn file_option(key: &str, value: &SqlExpr, statement: &str) -> Result<Option<Vec<String>>> {
    match key {
        "format" | "stored_as" => {
            let format = text(key, value)?;
            if !format.eq_ignore_ascii_case("parquet") {
                return Err(Error::Sql(format!(
                    "format = '{format}': {statement} writes PARQUET"
                )));
            }
        }
        "partitioned_by" | "partition_by" => return Ok(Some(names(key, value)?)),
        "write_compression" | "parquet_compression" | "compression" => {
            let codec = text(key, value)?;
            if !codec.eq_ignore_ascii_case("zstd") {
                return Err(Error::Sql(format!(
                    "{key} = '{codec}': Tarn writes Parquet with ZSTD"
                )));
            }
        }
        other => {
            return Err(Error::Sql(format!(
                "table property '{other}' is not supported; {statement} takes format, \
                 partitioned_by, external_location and write_compression"
            )));
        }
    }
    Ok(None)
}

/// The query's rows, led by an empty batch of its schema, so a query that gives no rows
/// still gives the writer its columns (an empty table, or no files).
pub(super) async fn rows_of(
    df: datafusion::prelude::DataFrame,
) -> Result<impl futures::Stream<Item = Result<arrow::array::RecordBatch>> + Send> {
    use futures::StreamExt;
    let empty =
        arrow::array::RecordBatch::new_empty(std::sync::Arc::new(df.schema().as_arrow().clone()));
    let stream = df.execute_stream().await?.map_err(Error::from);
    Ok(futures::stream::once(async move { Ok(empty) }).chain(stream))
}

/// The partition columns `names` of the query `df`, typed from its columns.
fn partition_columns(
    df: &datafusion::prelude::DataFrame,
    names: &[String],
) -> Result<Vec<PartitionColumn>> {
    let schema = df.schema().as_arrow();
    let mut columns = Vec::new();
    for key in names {
        let field = schema.field_with_name(key).map_err(|_| {
            Error::Sql(format!(
                "partitioned_by names '{key}', which the query does not give; its columns \
                 are {}",
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        columns.push(PartitionColumn {
            name: key.clone(),
            data_type: super::ddl::partition_type(key, field.data_type())?,
        });
    }
    if !columns.is_empty() && columns.len() >= schema.fields().len() {
        return Err(Error::Sql(
            "every column of the query is a partition column; the files need one more".into(),
        ));
    }
    Ok(columns)
}

impl Engine {
    /// Runs a `CREATE TABLE … AS SELECT`; returns the message for the client.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when the table exists (and not `IF NOT EXISTS`);
    /// [`Error::Sql`] for a partition column the query does not give or cannot be;
    /// [`Error::InvalidArgument`] for a location that is not allowed or not empty; as
    /// [`crate::ingest::ingest`].
    pub(crate) async fn create_table_as(&self, spec: &CreateTableAs) -> Result<String> {
        let qualified = format!("{}.{}", spec.database, spec.name);
        if self
            .catalog()
            .table(&spec.database, &spec.name)
            .await?
            .is_some()
        {
            if spec.if_not_exists {
                return Ok(format!("table {qualified} already exists"));
            }
            return Err(Error::AlreadyExists(format!(
                "table '{qualified}' already exists; DROP TABLE it first, or INSERT INTO it"
            )));
        }
        let df = self.plan_with_row(&spec.query, None).await?;
        let partition_columns = partition_columns(&df, &spec.partitioned_by)?;
        let location = match &spec.location {
            Some(l) => Some(self.empty_allowed_location(l).await?),
            None => None,
        };
        let stream = rows_of(df).await?;
        let request = crate::ingest::IngestRequest {
            database: Some(spec.database.clone()),
            table: spec.name.clone(),
            mode: crate::ingest::IngestMode::Create,
            layout: crate::ingest::NewTableLayout {
                partition_columns,
                location,
            },
        };
        let rows = self.ingest(&request, stream).await?;
        Ok(format!("created table {qualified} with {rows} rows"))
    }

    /// Runs an `UNLOAD`; returns the message for the client.
    ///
    /// # Errors
    /// As [`Engine::create_table_as`], less the table's.
    pub(crate) async fn unload(&self, spec: &Unload) -> Result<String> {
        let df = self.plan_with_row(&spec.query, None).await?;
        let partition_columns = partition_columns(&df, &spec.partitioned_by)?;
        let location = self.empty_allowed_location(&spec.to).await?;
        let stream = rows_of(df).await?;
        let (rows, files) =
            crate::ingest::unload(&self.shared.stores, &location, &partition_columns, stream)
                .await?;
        Ok(format!(
            "unloaded {rows} rows into {files} file(s) at {location}"
        ))
    }

    /// `location` when SQL may write there and it holds no file yet (as Athena's CTAS
    /// requires, so a table never mixes its files with others').
    async fn empty_allowed_location(&self, location: &str) -> Result<crate::storage::Location> {
        use futures::StreamExt;
        // A local folder that does not exist yet is made (once its name is allowed).
        self.lexically_allowed(location)?;
        if location.starts_with('/') {
            std::fs::create_dir_all(location).map_err(|e| Error::InvalidLocation {
                location: location.to_string(),
                reason: format!("cannot create it: {e}"),
            })?;
        }
        let location = self.check_allowed(location)?;
        let store = self.shared.stores.store_for(&location)?;
        let prefix = location.prefix();
        let mut listing = store.list(Some(&prefix));
        if let Some(first) = listing.next().await {
            let first = first.map_err(|e| Error::ObjectStore {
                location: location.to_string(),
                source: e,
            })?;
            return Err(Error::InvalidArgument(format!(
                "location '{location}' is not empty (it holds {}); CREATE TABLE … AS SELECT \
                 writes into an empty folder",
                first.location
            )));
        }
        Ok(location)
    }
}
