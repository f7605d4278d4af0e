//! `CREATE TABLE … AS SELECT` with Athena's properties: the query's rows written as
//! partitioned Parquet (zstd) into the warehouse or an allowed, empty location and
//! registered in one catalog commit, through bulk ingest.
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
    for option in options {
        let SqlOption::KeyValue { key, value } = option else {
            return Err(Error::Sql(format!(
                "table option {option} is not key = value"
            )));
        };
        let key = key.value.to_ascii_lowercase();
        match key.as_str() {
            "format" | "stored_as" => {
                let format = text(&key, value)?;
                if !format.eq_ignore_ascii_case("parquet") {
                    return Err(Error::Sql(format!(
                        "format = '{format}': CREATE TABLE … AS SELECT writes PARQUET"
                    )));
                }
            }
            "partitioned_by" | "partition_by" => spec.partitioned_by = names(&key, value)?,
            "external_location" | "location" => spec.location = Some(text(&key, value)?),
            "write_compression" | "parquet_compression" | "compression" => {
                let codec = text(&key, value)?;
                if !codec.eq_ignore_ascii_case("zstd") {
                    return Err(Error::Sql(format!(
                        "{key} = '{codec}': Tarn writes Parquet with ZSTD"
                    )));
                }
            }
            other => {
                return Err(Error::Sql(format!(
                    "table property '{other}' is not supported; CREATE TABLE … AS SELECT takes \
                     format, partitioned_by, external_location and write_compression"
                )));
            }
        }
    }
    Ok(Some(Command::CreateTableAs(Box::new(spec))))
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
        let schema = df.schema().as_arrow().clone();
        let mut partition_columns = Vec::new();
        for key in &spec.partitioned_by {
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
            partition_columns.push(PartitionColumn {
                name: key.clone(),
                data_type: super::ddl::partition_type(key, field.data_type())?,
            });
        }
        if partition_columns.len() >= schema.fields().len() {
            return Err(Error::Sql(
                "every column of the query is a partition column; a table needs one more".into(),
            ));
        }
        let location = match &spec.location {
            Some(l) => Some(self.empty_allowed_location(l).await?),
            None => None,
        };
        let stream = df.execute_stream().await?.map_err(Error::from);
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
