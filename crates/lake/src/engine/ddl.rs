//! Tarn's own statements: the DDL that changes the catalog, and the `SHOW` forms DataFusion
//! does not answer. They are recognised before planning; everything else is a query.
//!
//! | Statement | Effect |
//! |---|---|
//! | `CREATE DATABASE [IF NOT EXISTS] d` (or `SCHEMA`) | a database |
//! | `DROP DATABASE [IF EXISTS] d [CASCADE]` | drops it (and with CASCADE its tables) |
//! | `CREATE EXTERNAL TABLE [IF NOT EXISTS] [d.]t [(cols)] STORED AS PARQUET [PARTITIONED BY (…)] LOCATION '…'` | crawls the location into `d.t`, with the declared columns and partition types kept |
//! | `DROP TABLE [IF EXISTS] t` | removes `t` from the catalog (its files stay) |
//! | `MSCK REPAIR TABLE t` | re-crawls `t`'s location (incremental) |
//! | `ALTER TABLE t ADD [IF NOT EXISTS] PARTITION (k = v, …)` | picks up that partition's files |
//! | `ALTER TABLE t ADD [IF NOT EXISTS] PARTITION (k = v, …) LOCATION '…' [PARTITION …]` | a partition whose files are in that folder (any name, inside or outside the table's folder, in the table's bucket) |
//! | `ALTER TABLE t DROP [IF EXISTS] PARTITION (k = v, …)` | forgets that partition (its files stay) |
//! | `SHOW DATABASES` | database names |
//! | `SHOW PARTITIONS t` | `k=v/…` per partition, with file and row counts |
//! | `SHOW HISTORY t` | every schema version of `t` |
//! | `SHOW CRAWLS` | the last 100 crawls: when, where, what changed, problems |
//!
//! DDL locations are checked against the allowed roots (`--allow-location`), so SQL cannot
//! become a way to read arbitrary files of the server.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::TableReference;
use datafusion::logical_expr::{CreateExternalTable, DdlStatement, LogicalPlan};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    AlterTable, AlterTableOperation, BinaryOperator, CreateTableOptions, Expr as SqlExpr, Insert,
    ObjectName, ObjectType, ShowCreateObject, SqlOption, Statement, TableObject,
};

use crate::catalog::{PartitionType, TableFormat};
use crate::crawler::layout::is_under;
use crate::crawler::layout::{HIVE_NULL, parse_date, parse_timestamp};
use crate::crawler::{CrawlOptions, Crawler, Declared, PinnedPartition};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::storage::Location;

/// A statement Tarn runs itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    CreateDatabase {
        name: String,
        if_not_exists: bool,
    },
    DropDatabase {
        name: String,
        if_exists: bool,
        cascade: bool,
    },
    CreateExternalTable {
        database: String,
        name: String,
        location: String,
        if_not_exists: bool,
        declared: Declared,
        /// `STORED AS`: what the location must hold.
        format: TableFormat,
    },
    DropTable {
        database: String,
        name: String,
        if_exists: bool,
    },
    Repair {
        database: String,
        name: String,
    },
    AddPartitions {
        database: String,
        name: String,
        partitions: Vec<Vec<(String, String)>>,
        /// Each partition's `LOCATION`, when it names one: its files are in that folder.
        locations: Vec<Option<String>>,
        if_not_exists: bool,
    },
    DropPartitions {
        database: String,
        name: String,
        partitions: Vec<Vec<(String, String)>>,
        if_exists: bool,
    },
    ShowDatabases,
    ShowPartitions {
        database: String,
        name: String,
    },
    ShowHistory {
        database: String,
        name: String,
    },
    ShowCrawls,
    /// `CREATE MATERIALIZED VIEW [IF NOT EXISTS] d.v AS SELECT …`: a rollup.
    CreateMaterializedView {
        definition: Box<crate::catalog::RollupDef>,
        if_not_exists: bool,
        or_replace: bool,
    },
    /// `REFRESH MATERIALIZED VIEW d.v [FULL]`.
    RefreshMaterializedView {
        database: String,
        name: String,
        full: bool,
    },
    /// `DROP MATERIALIZED VIEW [IF EXISTS] d.v`.
    DropMaterializedView {
        database: String,
        name: String,
        if_exists: bool,
    },
    /// `SHOW MATERIALIZED VIEWS`.
    ShowMaterializedViews,
    /// `CREATE [OR REPLACE] VIEW [IF NOT EXISTS] d.v AS SELECT …`.
    CreateView {
        database: String,
        name: String,
        query: Box<datafusion::sql::sqlparser::ast::Query>,
        or_replace: bool,
        if_not_exists: bool,
    },
    /// `DROP VIEW [IF EXISTS] d.v`.
    DropView {
        database: String,
        name: String,
        if_exists: bool,
    },
    /// `SHOW CREATE VIEW d.v`.
    ShowCreateView {
        database: String,
        name: String,
    },
    /// `CREATE TABLE d.t WITH (…) AS SELECT …`.
    CreateTableAs(Box<super::ctas::CreateTableAs>),
    /// `UNLOAD (SELECT …) TO '…' WITH (…)`.
    Unload(Box<super::ctas::Unload>),
    /// `SHOW RESULT CACHE`: the result cache's size, hits and misses.
    ShowResultCache,
    /// `SET`, `RESET`, `USE` or `SHOW` of a session's setting: the front door keeps the
    /// session (see [`super::settings`]).
    Session(super::settings::SessionCommand),
    /// `INSERT INTO t [(columns)] VALUES … | SELECT …` (or `INSERT OVERWRITE`): the source
    /// query's rows bulk-ingested into the table.
    Insert {
        database: String,
        name: String,
        columns: Vec<String>,
        /// The source query as SQL (`VALUES …` or `SELECT …`).
        source: String,
        overwrite: bool,
    },
}

impl Command {
    /// Whether the command changes the catalog (an "update" to Flight SQL and JDBC).
    pub fn is_update(&self) -> bool {
        !matches!(
            self,
            Command::ShowDatabases
                | Command::ShowPartitions { .. }
                | Command::ShowHistory { .. }
                | Command::ShowCrawls
                | Command::ShowMaterializedViews
                | Command::ShowResultCache
                | Command::ShowCreateView { .. }
                | Command::Session(_)
        )
    }

    /// The statement's name, for messages ("DROP TABLE needs role admin").
    pub fn kind(&self) -> &'static str {
        match self {
            Command::CreateDatabase { .. } => "CREATE DATABASE",
            Command::DropDatabase { .. } => "DROP DATABASE",
            Command::CreateExternalTable { .. } => "CREATE EXTERNAL TABLE",
            Command::DropTable { .. } => "DROP TABLE",
            Command::Repair { .. } => "MSCK REPAIR TABLE",
            Command::AddPartitions { .. } => "ALTER TABLE ADD PARTITION",
            Command::DropPartitions { .. } => "ALTER TABLE DROP PARTITION",
            Command::ShowDatabases => "SHOW DATABASES",
            Command::ShowPartitions { .. } => "SHOW PARTITIONS",
            Command::ShowHistory { .. } => "SHOW HISTORY",
            Command::ShowCrawls => "SHOW CRAWLS",
            Command::CreateMaterializedView { .. } => "CREATE MATERIALIZED VIEW",
            Command::RefreshMaterializedView { .. } => "REFRESH MATERIALIZED VIEW",
            Command::DropMaterializedView { .. } => "DROP MATERIALIZED VIEW",
            Command::ShowMaterializedViews => "SHOW MATERIALIZED VIEWS",
            Command::CreateView { .. } => "CREATE VIEW",
            Command::DropView { .. } => "DROP VIEW",
            Command::ShowCreateView { .. } => "SHOW CREATE VIEW",
            Command::CreateTableAs(_) => "CREATE TABLE AS",
            Command::Unload(_) => "UNLOAD",
            Command::ShowResultCache => "SHOW RESULT CACHE",
            Command::Session(_) => "SET",
            Command::Insert {
                overwrite: true, ..
            } => "INSERT OVERWRITE",
            Command::Insert { .. } => "INSERT INTO",
        }
    }

    /// The schema of the command's result.
    pub fn schema(&self) -> SchemaRef {
        match self {
            Command::ShowDatabases => Arc::new(Schema::new(vec![Field::new(
                "database_name",
                DataType::Utf8,
                false,
            )])),
            Command::ShowPartitions { .. } => Arc::new(Schema::new(vec![
                Field::new("partition", DataType::Utf8, false),
                Field::new("files", DataType::Int64, false),
                // Unknown for a Delta partition whose log entries carry no row counts.
                Field::new("rows", DataType::Int64, true),
            ])),
            // A Parquet table's schema versions; a Delta table's commits (newest first), with
            // their operations.
            Command::ShowHistory { .. } => Arc::new(Schema::new(vec![
                Field::new("version", DataType::Int64, false),
                Field::new("created_at", DataType::Utf8, false),
                Field::new("columns", DataType::Utf8, true),
                Field::new("operation", DataType::Utf8, true),
            ])),
            Command::Insert { .. } => Arc::new(Schema::new(vec![Field::new(
                "count",
                DataType::UInt64,
                false,
            )])),
            Command::ShowMaterializedViews => crate::rollup::show_schema(),
            Command::Session(super::settings::SessionCommand::Show(_)) => {
                super::settings::show_schema()
            }
            Command::ShowCreateView { .. } => Arc::new(Schema::new(vec![Field::new(
                "create_statement",
                DataType::Utf8,
                false,
            )])),
            Command::ShowResultCache => Arc::new(Schema::new(
                [
                    "entries",
                    "bytes",
                    "budget_bytes",
                    "hits",
                    "misses",
                    "evictions",
                    "uncacheable",
                ]
                .into_iter()
                .map(|name| Field::new(name, DataType::UInt64, false))
                .collect::<Vec<_>>(),
            )),
            Command::ShowCrawls => Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("location", DataType::Utf8, false),
                Field::new("database", DataType::Utf8, false),
                Field::new("status", DataType::Utf8, false),
                Field::new("started_at", DataType::Utf8, false),
                Field::new("finished_at", DataType::Utf8, true),
                Field::new("files_added", DataType::Int64, true),
                Field::new("files_removed", DataType::Int64, true),
                Field::new("problems", DataType::Int64, true),
                Field::new("summary", DataType::Utf8, true),
            ])),
            _ => Arc::new(Schema::new(vec![Field::new(
                "result",
                DataType::Utf8,
                false,
            )])),
        }
    }
}

/// Recognises Tarn's statements. `None` means "plan it as a query".
///
/// # Errors
/// [`Error::Sql`] for a Tarn statement that is malformed (e.g. a partition spec that is
/// not `key = value`).
pub(crate) async fn recognise(engine: &Engine, statement: &DFStatement) -> Result<Option<Command>> {
    let state = engine.base_state();
    let default_db = &engine.default_database();
    if let Some(session) = super::settings::recognise(statement)? {
        return Ok(Some(Command::Session(session)));
    }
    match statement {
        DFStatement::CreateExternalTable(_) => {}
        DFStatement::Statement(s) => match s.as_ref() {
            Statement::Msck(msck) => {
                let (database, name) = table_name(&msck.table_name, default_db)?;
                return Ok(Some(Command::Repair { database, name }));
            }
            Statement::ShowDatabases { .. } | Statement::ShowSchemas { .. } => {
                return Ok(Some(Command::ShowDatabases));
            }
            Statement::ShowViews {
                materialized: true, ..
            } => return Ok(Some(Command::ShowMaterializedViews)),
            Statement::ShowVariable { variable }
                if variable.len() == 2
                    && variable[0].value.eq_ignore_ascii_case("materialized")
                    && variable[1].value.eq_ignore_ascii_case("views") =>
            {
                return Ok(Some(Command::ShowMaterializedViews));
            }
            Statement::ShowVariable { variable }
                if variable.len() == 2
                    && variable[0].value.eq_ignore_ascii_case("result")
                    && variable[1].value.eq_ignore_ascii_case("cache") =>
            {
                return Ok(Some(Command::ShowResultCache));
            }
            Statement::CreateView(_)
            | Statement::ShowCreate { .. }
            | Statement::Drop {
                object_type: ObjectType::MaterializedView | ObjectType::View,
                ..
            } => return view_statement(engine, s, default_db).await,
            Statement::ShowVariable { variable }
                if variable.first().is_some_and(|i| {
                    ["partitions", "history", "crawls"]
                        .iter()
                        .any(|k| i.value.eq_ignore_ascii_case(k))
                }) =>
            {
                let what = variable[0].value.to_ascii_lowercase();
                if what == "crawls" {
                    return Ok(Some(Command::ShowCrawls));
                }
                let parts: Vec<String> = variable[1..].iter().map(normalize).collect();
                let (database, name) = match parts.as_slice() {
                    [t] => (default_db.to_string(), t.to_string()),
                    [d, t] => (d.to_string(), t.to_string()),
                    _ => {
                        return Err(Error::Sql(format!(
                            "expected SHOW {} [database.]table",
                            what.to_uppercase()
                        )));
                    }
                };
                return Ok(Some(if what == "history" {
                    Command::ShowHistory { database, name }
                } else {
                    Command::ShowPartitions { database, name }
                }));
            }
            Statement::AlterTable(alter) => return alter_table(alter, default_db).map(Some),
            Statement::Unload {
                query, to, with, ..
            } => return super::ctas::recognise_unload(query.as_deref(), to, with).map(Some),
            Statement::CreateTable(create) if create.query.is_some() => {
                let (database, name) = table_name(&create.name, default_db)?;
                return super::ctas::recognise(create, database, name);
            }
            Statement::Drop {
                object_type: ObjectType::Database,
                if_exists,
                names,
                cascade,
                ..
            } => return drop_database(names, *if_exists, *cascade).map(Some),
            Statement::Insert(insert) => return insert_into(insert, default_db).map(Some),
            Statement::CreateSchema { .. }
            | Statement::CreateDatabase { .. }
            | Statement::Drop { .. } => {}
            _ => return Ok(None),
        },
        _ => return Ok(None),
    }

    // DataFusion plans these (types, names); Tarn carries them out.
    let plan = state
        .statement_to_plan(statement.clone())
        .await
        .map_err(Error::from)?;
    let LogicalPlan::Ddl(ddl) = plan else {
        return Ok(None);
    };
    Ok(Some(match ddl {
        DdlStatement::CreateCatalogSchema(c) => Command::CreateDatabase {
            name: last_part(&c.schema_name),
            if_not_exists: c.if_not_exists,
        },
        DdlStatement::DropCatalogSchema(d) => Command::DropDatabase {
            name: d.name.schema_name().to_string(),
            if_exists: d.if_exists,
            cascade: d.cascade,
        },
        DdlStatement::DropTable(d) => {
            let (database, name) = table_reference(&d.name, default_db);
            Command::DropTable {
                database,
                name,
                if_exists: d.if_exists,
            }
        }
        DdlStatement::CreateExternalTable(c) => create_external_table(&c, default_db)?,
        // Tarn has one catalog; a database is a DataFusion schema.
        DdlStatement::CreateCatalog(c) => Command::CreateDatabase {
            name: c.catalog_name.clone(),
            if_not_exists: c.if_not_exists,
        },
        _ => return Err(Error::Sql("this statement is not supported by Tarn".into())),
    }))
}

/// The statements about views and materialized views.
async fn view_statement(
    engine: &Engine,
    statement: &Statement,
    default_db: &str,
) -> Result<Option<Command>> {
    Ok(Some(match statement {
        Statement::CreateView(view) if view.materialized => {
            let (database, name) = table_name(&view.name, default_db)?;
            let plan = engine
                .base_state()
                .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                    Statement::Query(view.query.clone()),
                )))
                .await
                .map_err(Error::from)?;
            let mut definition = crate::rollup::define(
                &plan,
                &database,
                &name,
                &statement.to_string(),
                &view.query,
            )?;
            definition.max_staleness_secs = staleness_option(&view.options)?;
            Command::CreateMaterializedView {
                definition: Box::new(definition),
                if_not_exists: view.if_not_exists,
                or_replace: view.or_replace,
            }
        }
        Statement::CreateView(view) => {
            if !view.columns.is_empty() {
                return Err(Error::Sql(
                    "CREATE VIEW v (columns) is not supported; name the columns in the \
                     query (SELECT a AS x, …)"
                        .into(),
                ));
            }
            let (database, name) = table_name(&view.name, default_db)?;
            Command::CreateView {
                database,
                name,
                query: view.query.clone(),
                or_replace: view.or_replace,
                if_not_exists: view.if_not_exists,
            }
        }
        Statement::ShowCreate { obj_type, obj_name } => {
            if !matches!(obj_type, ShowCreateObject::View) {
                return Err(Error::Sql(format!(
                    "SHOW CREATE {obj_type} is not supported; Tarn supports SHOW CREATE VIEW"
                )));
            }
            let (database, name) = table_name(obj_name, default_db)?;
            Command::ShowCreateView { database, name }
        }
        Statement::Drop {
            object_type,
            if_exists,
            names,
            ..
        } => {
            let materialized = *object_type == ObjectType::MaterializedView;
            let [name] = names.as_slice() else {
                return Err(Error::Sql(format!("DROP {object_type} takes one name")));
            };
            let (database, name) = table_name(name, default_db)?;
            if materialized {
                Command::DropMaterializedView {
                    database,
                    name,
                    if_exists: *if_exists,
                }
            } else {
                Command::DropView {
                    database,
                    name,
                    if_exists: *if_exists,
                }
            }
        }
        _ => return Ok(None),
    }))
}

/// `DROP DATABASE [IF EXISTS] name [CASCADE]`.
fn drop_database(names: &[ObjectName], if_exists: bool, cascade: bool) -> Result<Command> {
    let [name] = names else {
        return Err(Error::Sql("DROP DATABASE takes one name".into()));
    };
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident().map(normalize))
        .collect();
    let [name] = parts.as_slice() else {
        return Err(Error::Sql(format!("'{name}' is not a database name")));
    };
    Ok(Command::DropDatabase {
        name: name.clone(),
        if_exists,
        cascade,
    })
}

/// `ALTER TABLE … DROP PARTITION` (`ADD PARTITION` is Tarn's parser's: [`tarn_command`]).
fn alter_table(alter: &AlterTable, default_db: &str) -> Result<Command> {
    let (database, name) = table_name(&alter.name, default_db)?;
    if alter.location.is_some() {
        return Err(Error::Sql(
            "LOCATION '…' follows a PARTITION (…) of ALTER TABLE … ADD PARTITION; other \
             ALTER TABLE statements take none"
                .into(),
        ));
    }
    let [operation] = alter.operations.as_slice() else {
        return Err(Error::Sql(
            "ALTER TABLE takes one operation at a time".into(),
        ));
    };
    Ok(match operation {
        AlterTableOperation::DropPartitions {
            partitions,
            if_exists,
        } => Command::DropPartitions {
            database,
            name,
            partitions: vec![partition_spec(partitions)?],
            if_exists: *if_exists,
        },
        other => {
            return Err(Error::Sql(format!(
                "ALTER TABLE … {other} is not supported; Tarn supports ADD PARTITION \
                 and DROP PARTITION (columns follow the files: crawl again)"
            )));
        }
    })
}

/// `INSERT [OVERWRITE] INTO t [(columns)] VALUES … | SELECT …`.
fn insert_into(insert: &Insert, default_db: &str) -> Result<Command> {
    let TableObject::TableName(table) = &insert.table else {
        return Err(Error::Sql(
            "INSERT INTO a table function is not supported".into(),
        ));
    };
    let (database, name) = table_name(table, default_db)?;
    if insert.partitioned.is_some()
        || !insert.assignments.is_empty()
        || insert.on.is_some()
        || insert.returning.is_some()
    {
        return Err(Error::Sql(
            "Tarn supports INSERT [OVERWRITE] INTO t [(columns)] VALUES … | SELECT …; \
             partition clauses, SET, ON CONFLICT and RETURNING are not supported \
             (partition columns are ordinary columns of the inserted rows)"
                .into(),
        ));
    }
    let source = insert
        .source
        .as_ref()
        .ok_or_else(|| Error::Sql("INSERT needs VALUES or a SELECT".into()))?
        .to_string();
    let columns = insert
        .columns
        .iter()
        .map(|c| {
            c.0.last()
                .and_then(|p| p.as_ident())
                .map(normalize)
                .ok_or_else(|| Error::Sql(format!("'{c}' is not a column name")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Command::Insert {
        database,
        name,
        columns,
        source,
        overwrite: insert.overwrite,
    })
}

/// `CREATE EXTERNAL TABLE … STORED AS … [PARTITIONED BY …] LOCATION …`, as DataFusion
/// planned it.
fn create_external_table(c: &CreateExternalTable, default_db: &str) -> Result<Command> {
    let (database, name) = table_reference(&c.name, default_db);
    let Some(format) = TableFormat::parse(&c.file_type) else {
        return Err(Error::Sql(format!(
            "STORED AS {} is not supported yet; Tarn reads PARQUET, CSV, JSON and DELTA \
             tables",
            c.file_type
        )));
    };
    let delta = format == TableFormat::Delta;
    if delta && (!c.schema.fields().is_empty() || !c.table_partition_cols.is_empty()) {
        return Err(Error::Sql(
            "a Delta table's columns and partitions come from its log: leave out the \
             column list and PARTITIONED BY"
                .into(),
        ));
    }
    let [location] = c.locations.as_slice() else {
        return Err(Error::Sql(
            "CREATE EXTERNAL TABLE takes one LOCATION".into(),
        ));
    };
    let fields = c.schema.as_arrow().fields().clone();
    let mut partition_types = BTreeMap::new();
    for key in &c.table_partition_cols {
        if let Some(field) = fields.iter().find(|f| f.name() == key) {
            partition_types.insert(key.clone(), partition_type(key, field.data_type())?);
        }
    }
    let file_fields: Vec<_> = fields
        .iter()
        .filter(|f| !c.table_partition_cols.contains(f.name()))
        .map(|f| {
            // Declared strings are stored as Parquet writes them (Utf8); the
            // reader still produces views where DataFusion prefers them.
            let t = match f.data_type() {
                DataType::Utf8View => DataType::Utf8,
                DataType::BinaryView => DataType::Binary,
                other => other.clone(),
            };
            Arc::new(Field::new(f.name(), t, true))
        })
        .collect();
    let declared = Declared {
        schema: (!file_fields.is_empty()).then(|| Arc::new(Schema::new(file_fields))),
        // Without PARTITIONED BY the partition folders are found as in a crawl.
        partition_keys: (!c.table_partition_cols.is_empty())
            .then(|| c.table_partition_cols.clone()),
        partition_types,
    };
    Ok(Command::CreateExternalTable {
        database,
        name,
        location: location.clone(),
        if_not_exists: c.if_not_exists,
        declared,
        format,
    })
}

/// `WITH (max_staleness_seconds = N)` of a materialized view: how old its rows may be
/// before queries read the base for partitions it has not caught up with.
fn staleness_option(options: &CreateTableOptions) -> Result<Option<u64>> {
    let list = match options {
        CreateTableOptions::None => return Ok(None),
        CreateTableOptions::With(list)
        | CreateTableOptions::Options(list)
        | CreateTableOptions::Plain(list)
        | CreateTableOptions::TableProperties(list) => list,
    };
    let mut out = None;
    for option in list {
        let SqlOption::KeyValue { key, value } = option else {
            return Err(Error::Sql(format!(
                "materialized view option {option} is not supported; use \
                 WITH (max_staleness_seconds = N)"
            )));
        };
        if !key.value.eq_ignore_ascii_case("max_staleness_seconds") {
            return Err(Error::Sql(format!(
                "unknown materialized view option '{key}'; Tarn knows max_staleness_seconds"
            )));
        }
        let text = value.to_string();
        let secs = text.trim_matches('\'').parse::<u64>().map_err(|_| {
            Error::Sql(format!(
                "max_staleness_seconds must be a whole number of seconds, not {text}"
            ))
        })?;
        out = Some(secs);
    }
    Ok(out)
}

/// The command of one of Tarn's own statements, which [`super::parse`] reads itself.
///
/// # Errors
/// [`Error::Sql`] for a malformed name or partition spec.
pub(crate) fn tarn_command(parsed: super::parse::Parsed, default_db: &str) -> Result<Command> {
    use super::parse::Parsed;
    match parsed {
        Parsed::Refresh { view, full } => {
            let (database, name) = table_name(&view, default_db)?;
            Ok(Command::RefreshMaterializedView {
                database,
                name,
                full,
            })
        }
        Parsed::AddPartitions {
            table,
            if_not_exists,
            partitions,
        } => {
            let (database, name) = table_name(&table, default_db)?;
            let (partitions, locations) = partitions
                .into_iter()
                .map(|(spec, location)| Ok((partition_spec(&spec)?, location)))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .unzip();
            Ok(Command::AddPartitions {
                database,
                name,
                partitions,
                locations,
                if_not_exists,
            })
        }
        Parsed::Statement(statement) => Err(Error::Internal(format!(
            "not one of Tarn's own statements: {statement}"
        ))),
    }
}

/// An identifier as DataFusion resolves it: unquoted names are lower-cased, quoted ones
/// kept as written.
fn normalize(ident: &datafusion::sql::sqlparser::ast::Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

fn last_part(name: &str) -> String {
    name.rsplit('.').next().unwrap_or(name).to_string()
}

fn table_reference(t: &TableReference, default_db: &str) -> (String, String) {
    (
        t.schema().unwrap_or(default_db).to_string(),
        t.table().to_string(),
    )
}

fn table_name(name: &ObjectName, default_db: &str) -> Result<(String, String)> {
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident().map(normalize))
        .collect();
    match parts.as_slice() {
        [t] => Ok((default_db.to_string(), t.clone())),
        [d, t] => Ok((d.clone(), t.clone())),
        [_, d, t] => Ok((d.clone(), t.clone())),
        _ => Err(Error::Sql(format!("'{name}' is not a table name"))),
    }
}

/// `(k1 = v1, k2 = 'v2')` as key/value strings.
fn partition_spec(exprs: &[SqlExpr]) -> Result<Vec<(String, String)>> {
    exprs
        .iter()
        .map(|e| match e {
            SqlExpr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => {
                let key = match left.as_ref() {
                    SqlExpr::Identifier(i) => normalize(i),
                    other => {
                        return Err(Error::Sql(format!("'{other}' is not a partition column")));
                    }
                };
                let value = match right.as_ref() {
                    SqlExpr::Value(v) => match &v.value {
                        datafusion::sql::sqlparser::ast::Value::SingleQuotedString(s)
                        | datafusion::sql::sqlparser::ast::Value::DoubleQuotedString(s) => {
                            s.clone()
                        }
                        other => other.to_string(),
                    },
                    SqlExpr::Identifier(i) => i.value.clone(),
                    other => other.to_string(),
                };
                Ok((key, value))
            }
            other => Err(Error::Sql(format!(
                "expected key = value in a partition spec, found '{other}'"
            ))),
        })
        .collect()
}

pub(crate) fn partition_type(key: &str, t: &DataType) -> Result<PartitionType> {
    Ok(match t {
        t if t.is_integer() => PartitionType::Int64,
        DataType::Date32 | DataType::Date64 => PartitionType::Date,
        DataType::Timestamp(..) => PartitionType::Timestamp,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => PartitionType::String,
        other => {
            return Err(Error::Sql(format!(
                "partition column '{key}' cannot be {other}; use BIGINT, DATE, TIMESTAMP or STRING"
            )));
        }
    })
}

/// Whether a stored partition value and one written in a statement mean the same value
/// (`month = 1` names the folder `month=01` of an int64 column).
fn same_partition_value(t: PartitionType, stored: Option<&str>, wanted: &str) -> bool {
    let Some(stored) = stored else {
        return wanted.eq_ignore_ascii_case("null") || wanted == HIVE_NULL;
    };
    if stored == wanted {
        return true;
    }
    match t {
        PartitionType::Int64 => {
            matches!((stored.parse::<i64>(), wanted.parse::<i64>()), (Ok(a), Ok(b)) if a == b)
        }
        PartitionType::Date => {
            matches!((parse_date(stored), parse_date(wanted)), (Some(a), Some(b)) if a == b)
        }
        PartitionType::Timestamp => {
            matches!((parse_timestamp(stored), parse_timestamp(wanted)), (Some(a), Some(b)) if a == b)
        }
        PartitionType::String => false,
    }
}

/// Whether a partition's stored values are the ones a spec names.
fn spec_matches(
    table: &crate::catalog::TableEntry,
    spec: &[(String, String)],
    values: &[Option<String>],
) -> bool {
    values.len() == spec.len()
        && table.partition_columns.iter().zip(values).zip(spec).all(
            |((column, stored), (_, wanted))| {
                same_partition_value(column.data_type, stored.as_deref(), wanted)
            },
        )
}

/// A partition spec must name the table's partition columns, in order.
fn check_spec(table: &crate::catalog::TableEntry, spec: &[(String, String)]) -> Result<()> {
    if table.format == TableFormat::Delta {
        return Err(Error::InvalidArgument(format!(
            "{}.{} is a Delta table: its partitions come from its log; MSCK REPAIR TABLE \
             catalogues its newest version",
            table.database, table.name
        )));
    }
    let keys: Vec<&str> = spec.iter().map(|(k, _)| k.as_str()).collect();
    let columns: Vec<&str> = table
        .partition_columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    if keys != columns {
        return Err(Error::InvalidArgument(format!(
            "partition spec ({}) does not name the partition columns of {}.{} in order ({})",
            keys.join(", "),
            table.database,
            table.name,
            columns.join(", ")
        )));
    }
    Ok(())
}

pub(crate) fn message(text: impl Into<String>) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "result",
        DataType::Utf8,
        false,
    )]));
    Ok(RecordBatch::try_new(
        schema,
        vec![Arc::new(StringArray::from(vec![text.into()]))],
    )?)
}

impl Engine {
    /// Runs a command with the parameter rows a client bound (each row is one execution of
    /// the statement; an `INSERT`'s rows from every execution go into one ingest).
    ///
    /// # Errors
    /// As [`Engine::run_command`] and [`Engine::insert`].
    pub async fn run_statement(
        &self,
        command: &Command,
        rows: &[RecordBatch],
    ) -> Result<RecordBatch> {
        match command {
            Command::Insert { .. } => self.insert_command(command, rows).await,
            _ => self.run_command(command).await,
        }
    }

    async fn insert_command(&self, command: &Command, rows: &[RecordBatch]) -> Result<RecordBatch> {
        let Command::Insert {
            database,
            name,
            columns,
            source,
            overwrite,
        } = command
        else {
            return Err(Error::Internal("not an INSERT".into()));
        };
        let count = self
            .insert(database, name, columns, source, *overwrite, rows)
            .await?;
        Ok(RecordBatch::try_new(
            command.schema(),
            vec![Arc::new(arrow::array::UInt64Array::from(vec![count]))],
        )?)
    }

    /// `INSERT`: plans `source` once per parameter row (once without), fits its columns to
    /// the table's (by the column list, else by position; cast to the table's types) and
    /// bulk-ingests the rows in one commit. Returns the number of rows inserted.
    ///
    /// # Errors
    /// [`Error::TableNotFound`]; [`Error::Sql`] when the columns do not fit the table; as
    /// [`crate::ingest::ingest`].
    pub async fn insert(
        &self,
        database: &str,
        name: &str,
        columns: &[String],
        source: &str,
        overwrite: bool,
        rows: &[RecordBatch],
    ) -> Result<u64> {
        use futures::{StreamExt, TryStreamExt};
        let table =
            self.catalog()
                .table(database, name)
                .await?
                .ok_or_else(|| Error::TableNotFound {
                    name: format!("{database}.{name}"),
                })?;
        let table_schema = table.table_schema();
        let runs: Vec<Option<&RecordBatch>> = if rows.is_empty() {
            vec![None]
        } else {
            rows.iter().map(Some).collect()
        };
        let mut streams = Vec::with_capacity(runs.len());
        let mut target: Option<SchemaRef> = None;
        for row in runs {
            let df = self.plan_with_row(source, row).await?;
            let produced = df.schema().as_arrow().clone();
            let names: Vec<String> = if columns.is_empty() {
                if produced.fields().len() > table_schema.fields().len() {
                    return Err(Error::Sql(format!(
                        "INSERT gives {} values per row but {database}.{name} has {} columns",
                        produced.fields().len(),
                        table_schema.fields().len()
                    )));
                }
                table_schema
                    .fields()
                    .iter()
                    .take(produced.fields().len())
                    .map(|f| f.name().clone())
                    .collect()
            } else {
                if columns.len() != produced.fields().len() {
                    return Err(Error::Sql(format!(
                        "INSERT names {} columns but gives {} values per row",
                        columns.len(),
                        produced.fields().len()
                    )));
                }
                columns.to_vec()
            };
            let mut fields = Vec::with_capacity(names.len());
            for (n, f) in names.iter().zip(produced.fields()) {
                let t = table_schema
                    .field_with_name(n)
                    .map(|tf| tf.data_type().clone())
                    .map_err(|_| Error::Sql(format!("{database}.{name} has no column '{n}'")))?;
                if !arrow::compute::can_cast_types(f.data_type(), &t) {
                    return Err(Error::Sql(format!(
                        "column '{n}' is {t} in {database}.{name}; a {} value cannot be \
                         inserted into it",
                        f.data_type()
                    )));
                }
                fields.push(Field::new(n, t, true));
            }
            let schema: SchemaRef = Arc::new(Schema::new(fields));
            if target.as_ref().is_some_and(|t| t != &schema) {
                return Err(Error::InvalidArgument(
                    "parameter rows give values of different types; bind one type per \
                     parameter"
                        .into(),
                ));
            }
            target = Some(Arc::clone(&schema));
            // Led by an empty batch: a source that gives no rows still names the columns,
            // and inserts nothing.
            let empty = RecordBatch::new_empty(Arc::clone(&schema));
            let stream = df.execute_stream().await.map_err(Error::from)?;
            let rows = stream.map_err(Error::from).and_then(move |batch| {
                let schema = Arc::clone(&schema);
                async move {
                    let columns = batch
                        .columns()
                        .iter()
                        .zip(schema.fields())
                        .map(|(c, f)| {
                            // Strict: a value that does not convert is an error, not NULL.
                            let options = arrow::compute::CastOptions {
                                safe: false,
                                ..Default::default()
                            };
                            arrow::compute::cast_with_options(c, f.data_type(), &options)
                                .map_err(|e| Error::Sql(format!("column '{}': {e}", f.name())))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    Ok(RecordBatch::try_new(schema, columns)?)
                }
            });
            streams.push(futures::stream::once(async move { Ok(empty) }).chain(rows));
        }
        let request = crate::ingest::IngestRequest {
            database: Some(database.to_string()),
            table: name.to_string(),
            mode: if overwrite {
                crate::ingest::IngestMode::Replace
            } else {
                crate::ingest::IngestMode::Append
            },
            layout: Default::default(),
        };
        self.ingest(&request, futures::stream::iter(streams).flatten())
            .await
    }

    /// Writes `batches` into the table `request` names (in the default database when it
    /// names none) and commits them, then refreshes the catalog snapshot and the views
    /// over the table; returns the number of rows ingested. See [`crate::ingest::ingest`].
    ///
    /// # Errors
    /// As [`crate::ingest::ingest`].
    pub async fn ingest<S>(&self, request: &crate::ingest::IngestRequest, batches: S) -> Result<u64>
    where
        S: futures::Stream<Item = Result<arrow::array::RecordBatch>> + Send,
    {
        let database = request
            .database
            .clone()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| self.default_database());
        let database_exists = database == super::DEFAULT_DATABASE
            || self
                .catalog()
                .databases()
                .await?
                .iter()
                .any(|d| d.name == database);
        let to = crate::ingest::Destination {
            catalog: self.catalog(),
            stores: self.stores(),
            warehouse: self.warehouse_location(&database, &request.table),
            database,
            database_exists,
        };
        let rows = crate::ingest::ingest(to, request, batches).await?;
        self.refresh().await?;
        self.refresh_stale_rollups().await;
        Ok(rows)
    }

    /// Checks that SQL may name `location`: it must be under one of the allowed roots.
    pub fn check_allowed(&self, location: &str) -> Result<Location> {
        self.lexically_allowed(location)?;
        // Then the real location (symbolic links resolved) must be allowed too.
        let parsed = Location::parse(location)?;
        if !self.is_allowed(parsed.url.as_str()) {
            return Err(self.refuse(location));
        }
        Ok(parsed)
    }

    fn is_allowed(&self, url: &str) -> bool {
        self.allowed_locations
            .iter()
            .any(|root| url.starts_with(root.as_str()))
    }

    fn refuse(&self, location: &str) -> Error {
        Error::InvalidLocation {
            location: location.to_string(),
            reason: format!(
                "not under a location SQL may use ({}); start the server with \
                 --allow-location to add one",
                if self.allowed_locations.is_empty() {
                    "none configured".to_string()
                } else {
                    self.allowed_locations.join(", ")
                }
            ),
        }
    }

    /// Whether `location` as written is under a location SQL may use, decided before
    /// anything touches the disk (so SQL cannot probe which server paths exist): no dot
    /// segments, no encoded separators or dots, and the text itself under an allowed root.
    pub(crate) fn lexically_allowed(&self, location: &str) -> Result<()> {
        let refuse = || self.refuse(location);
        // First a lexical check, before anything touches the disk (so SQL cannot probe
        // which server paths exist): no dot segments, no encoded separators or dots, and
        // the text itself must be under an allowed root.
        let lowered = location.to_ascii_lowercase();
        if ["%2f", "%5c", "%2e"].iter().any(|e| lowered.contains(e))
            || location
                .split(['/', '\\'])
                .any(|seg| seg == ".." || seg == ".")
        {
            return Err(refuse());
        }
        let lexical = if location.contains("://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("file://{location}")
        } else {
            return Err(Error::InvalidLocation {
                location: location.to_string(),
                reason: "use an absolute path or a URL".into(),
            });
        };
        let lexical = if lexical.ends_with('/') {
            lexical
        } else {
            format!("{lexical}/")
        };
        if !self.is_allowed(&lexical) {
            return Err(refuse());
        }
        Ok(())
    }

    /// Keeps where the partitions of `ALTER TABLE … ADD PARTITION (…) LOCATION '…'` are, in
    /// the table's properties, for this and every later crawl of the table.
    async fn pin_partitions(
        &self,
        table: &crate::catalog::TableEntry,
        partitions: &[Vec<(String, String)>],
        locations: &[Option<String>],
        if_not_exists: bool,
    ) -> Result<()> {
        let qualified = format!("{}.{}", table.database, table.name);
        let table_location = Location::parse_catalogued(&table.location)?;
        let table_path = table_location.prefix().as_ref().to_string();
        let mut pins = self
            .catalog()
            .table_properties(table.id)
            .await?
            .pinned_partitions;
        let existing = self.catalog().partitions(table.id).await?;
        let tables = self.catalog().tables().await?;
        for (spec, location) in partitions.iter().zip(locations) {
            let Some(location) = location else {
                continue;
            };
            let named = spec
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ");
            let taken = existing
                .iter()
                .any(|p| spec_matches(table, spec, &p.values))
                || pins.iter().any(|p| spec_matches(table, spec, &p.values));
            if taken {
                if if_not_exists {
                    continue;
                }
                return Err(Error::InvalidArgument(format!(
                    "{qualified} already has the partition ({named}); ADD IF NOT EXISTS leaves \
                     it as it is, and DROP PARTITION first moves it"
                )));
            }
            let parsed = self.check_allowed(location)?;
            let refuse = |reason: String| Error::InvalidLocation {
                location: location.clone(),
                reason,
            };
            if parsed.store_url() != table_location.store_url() {
                return Err(refuse(format!(
                    "not in the store of {qualified} ({}): a partition's folder must be in \
                     its table's bucket",
                    table_location.store_url().as_str()
                )));
            }
            let path = parsed.prefix().as_ref().to_string();
            if path == table_path || is_under(&table_path, &path) {
                return Err(refuse(format!(
                    "the folder of {qualified} itself or one above it; a partition's folder \
                     is one of its own"
                )));
            }
            let url = format!("{}{path}/", table_location.store_url().as_str());
            if let Some(other) = tables.iter().find(|t| {
                t.id != table.id && (url.starts_with(&t.location) || t.location.starts_with(&url))
            }) {
                return Err(refuse(format!(
                    "the folder of table {}.{} ({}) or one holding it; a partition of \
                     {qualified} cannot take another table's files",
                    other.database, other.name, other.location
                )));
            }
            if let Some(other) = pins
                .iter()
                .find(|p| p.path == path || is_under(&path, &p.path) || is_under(&p.path, &path))
            {
                return Err(refuse(format!(
                    "overlaps the folder of another partition of {qualified} ({}); give each \
                     partition a folder of its own",
                    other.path
                )));
            }
            let values = spec
                .iter()
                .map(|(_, v)| {
                    (!(v.eq_ignore_ascii_case("null") || v == HIVE_NULL)).then(|| v.clone())
                })
                .collect();
            pins.push(PinnedPartition { values, path });
        }
        Ok(self
            .catalog()
            .set_pinned_partitions(table.id, &pins)
            .await?)
    }

    async fn existing_table(
        &self,
        database: &str,
        name: &str,
    ) -> Result<crate::catalog::TableEntry> {
        self.catalog()
            .table(database, name)
            .await?
            .ok_or_else(|| Error::TableNotFound {
                name: format!("{database}.{name}"),
            })
    }

    async fn recrawl(&self, database: &str, name: &str) -> Result<crate::crawler::CrawlSummary> {
        let table = self.existing_table(database, name).await?;
        let options = CrawlOptions::table(database, name);
        let mut summary = Crawler::new(self.catalog().clone(), Arc::clone(self.stores()))
            .crawl(&table.location, &options)
            .await?;
        self.refresh_after_crawl(&mut summary).await;
        Ok(summary)
    }

    /// Runs a Tarn statement and returns its result.
    ///
    /// # Errors
    /// Whatever the statement fails with: an unknown table or database, a location that
    /// is not allowed, a crawl failure.
    pub async fn run_command(&self, command: &Command) -> Result<RecordBatch> {
        let batch = match command {
            Command::Insert { .. } => self.insert_command(command, &[]).await?,
            Command::CreateMaterializedView { .. }
            | Command::RefreshMaterializedView { .. }
            | Command::DropMaterializedView { .. }
            | Command::ShowMaterializedViews
            | Command::CreateView { .. }
            | Command::DropView { .. }
            | Command::ShowCreateView { .. }
            | Command::CreateTableAs(_)
            | Command::Unload(_) => self.run_view_command(command).await?,
            Command::ShowResultCache => self.show_result_cache(command.schema())?,
            Command::Session(super::settings::SessionCommand::Show(name)) => {
                self.show_settings(name.as_deref())?
            }
            Command::Session(command) => return Err(super::settings::without_session(command)),
            Command::CreateDatabase {
                name,
                if_not_exists,
            } => {
                if name.eq_ignore_ascii_case(super::SYSTEM_DATABASE) {
                    return Err(Error::InvalidArgument(format!(
                        "'{name}' is Tarn's own database (system.queries); choose another name"
                    )));
                }
                if self.catalog().create_database(name, *if_not_exists).await? {
                    message(format!("created database {name}"))?
                } else {
                    message(format!("database {name} already exists"))?
                }
            }
            Command::DropDatabase {
                name,
                if_exists,
                cascade,
            } => {
                if self
                    .catalog()
                    .drop_database(name, *if_exists, *cascade)
                    .await?
                {
                    message(format!("dropped database {name}"))?
                } else {
                    message(format!("database {name} does not exist"))?
                }
            }
            Command::CreateExternalTable {
                database,
                name,
                location,
                if_not_exists,
                declared,
                format,
            } => {
                self.create_external_table(
                    database,
                    name,
                    location,
                    *if_not_exists,
                    declared,
                    *format,
                )
                .await?
            }
            Command::DropTable {
                database,
                name,
                if_exists,
            } => {
                if self.catalog().drop_table(database, name).await? {
                    message(format!(
                        "dropped table {database}.{name} (its files are untouched)"
                    ))?
                } else if *if_exists {
                    message(format!("table {database}.{name} does not exist"))?
                } else {
                    return Err(Error::TableNotFound {
                        name: format!("{database}.{name}"),
                    });
                }
            }
            Command::Repair { database, name } => self.repair(database, name, None).await?,
            Command::AddPartitions {
                database,
                name,
                partitions,
                locations,
                if_not_exists,
            } => {
                self.repair(
                    database,
                    name,
                    Some((partitions, locations, *if_not_exists)),
                )
                .await?
            }
            Command::DropPartitions {
                database,
                name,
                partitions,
                if_exists,
            } => {
                self.drop_partitions(database, name, partitions, *if_exists)
                    .await?
            }
            Command::ShowHistory { database, name } => {
                self.show_history(command.schema(), database, name).await?
            }
            Command::ShowCrawls => self.show_crawls(command.schema()).await?,
            Command::ShowDatabases => {
                self.refresh().await?;
                let names = self.databases();
                RecordBatch::try_new(command.schema(), vec![Arc::new(StringArray::from(names))])?
            }
            Command::ShowPartitions { database, name } => {
                self.show_partitions(command.schema(), database, name)
                    .await?
            }
        };
        Ok(batch)
    }

    /// The commands about views, materialized views and `CREATE TABLE … AS SELECT` (part of [`Engine::run_command`]).
    async fn run_view_command(&self, command: &Command) -> Result<RecordBatch> {
        Ok(match command {
            Command::CreateMaterializedView {
                definition,
                if_not_exists,
                or_replace,
            } => {
                if *or_replace {
                    self.drop_rollup(&definition.database, &definition.name)
                        .await?;
                }
                message(
                    self.create_rollup(definition.as_ref().clone(), *if_not_exists)
                        .await?,
                )?
            }
            Command::RefreshMaterializedView {
                database,
                name,
                full,
            } => {
                let report = self.refresh_rollup(database, name, *full).await?;
                message(format!("refreshed {database}.{name}: {report}"))?
            }
            Command::DropMaterializedView {
                database,
                name,
                if_exists,
            } => {
                if self.drop_rollup(database, name).await? {
                    message(format!("dropped materialized view {database}.{name}"))?
                } else if *if_exists {
                    message(format!(
                        "materialized view {database}.{name} does not exist"
                    ))?
                } else {
                    return Err(Error::InvalidArgument(format!(
                        "materialized view '{database}.{name}' does not exist; see SHOW \
                         MATERIALIZED VIEWS"
                    )));
                }
            }
            Command::ShowMaterializedViews => self.show_rollups().await?,
            Command::CreateView {
                database,
                name,
                query,
                or_replace,
                if_not_exists,
            } => message(
                self.create_view(database, name, query, *or_replace, *if_not_exists)
                    .await?,
            )?,
            Command::DropView {
                database,
                name,
                if_exists,
            } => {
                if self.catalog().drop_view(database, name).await? {
                    message(format!("dropped view {database}.{name}"))?
                } else if *if_exists {
                    message(format!("view {database}.{name} does not exist"))?
                } else {
                    return Err(super::sql_views::no_such_view(database, name));
                }
            }
            Command::ShowCreateView { database, name } => {
                self.show_create_view(database, name).await?
            }
            Command::CreateTableAs(spec) => message(self.create_table_as(spec).await?)?,
            Command::Unload(spec) => message(self.unload(spec).await?)?,
            _ => return Err(Error::Internal("not a view command".into())),
        })
    }
}

/// Partitions `ALTER TABLE … ADD PARTITION` names: the specs, each one's `LOCATION` if
/// it names one, and `IF NOT EXISTS`.
type AddedPartitions<'a> = (&'a [Vec<(String, String)>], &'a [Option<String>], bool);

/// The longer commands of [`Engine::run_command`], one method each.
impl Engine {
    /// `SHOW RESULT CACHE`: the result cache's size, budget and counts.
    fn show_result_cache(&self, schema: SchemaRef) -> Result<RecordBatch> {
        let s = self.result_cache_stats();
        let columns: Vec<arrow::array::ArrayRef> = [
            s.entries as u64,
            s.bytes as u64,
            s.budget as u64,
            s.hits,
            s.misses,
            s.evictions,
            s.uncacheable,
        ]
        .into_iter()
        .map(|v| Arc::new(arrow::array::UInt64Array::from(vec![v])) as _)
        .collect();
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    /// `MSCK REPAIR TABLE` and `ALTER TABLE … ADD PARTITION`: the partitions `added`
    /// names checked (and those at a folder of their own pinned), then the table's folder
    /// crawled again.
    async fn repair(
        &self,
        database: &str,
        name: &str,
        added: Option<AddedPartitions<'_>>,
    ) -> Result<RecordBatch> {
        if let Some((partitions, locations, if_not_exists)) = added {
            let table = self.existing_table(database, name).await?;
            for spec in partitions {
                check_spec(&table, spec)?;
            }
            if locations.iter().any(Option::is_some) {
                self.pin_partitions(&table, partitions, locations, if_not_exists)
                    .await?;
            }
        }
        let summary = self.recrawl(database, name).await?;
        let mut text = format!(
            "repaired {database}.{name}: partitions +{} -{}, files +{} ~{} -{}",
            summary.partitions_added,
            summary.partitions_removed,
            summary.files_added,
            summary.files_changed,
            summary.files_removed
        );
        for p in &summary.problems {
            text.push_str(&format!("; {}: {}", p.path, p.message));
        }
        message(text)
    }

    /// `CREATE EXTERNAL TABLE`: the table catalogued from what `location` holds (or
    /// created empty with its declared columns), refused when the location holds another
    /// format than `format`.
    async fn create_external_table(
        &self,
        database: &str,
        name: &str,
        location: &str,
        if_not_exists: bool,
        declared: &Declared,
        format: TableFormat,
    ) -> Result<RecordBatch> {
        let parsed = self.check_allowed(location)?;
        if format == TableFormat::Delta {
            let store = self.stores().store_for(&parsed)?;
            let log = object_store::path::Path::from(format!(
                "{}/_delta_log",
                parsed.prefix().as_ref().trim_end_matches('/')
            ));
            let entries: Vec<_> = futures::TryStreamExt::try_collect(store.list(Some(&log)))
                .await
                .map_err(|e| Error::store(location.to_string(), e))?;
            if !entries.iter().any(|m| {
                crate::crawler::layout::is_delta_log_entry(m.location.filename().unwrap_or(""))
            }) {
                return Err(Error::InvalidArgument(format!(
                    "{location} holds no Delta table: its _delta_log/ has no commit or \
                     checkpoint; use STORED AS PARQUET for loose Parquet files"
                )));
            }
        }
        if let Some(existing) = self.catalog().table(database, name).await? {
            if if_not_exists {
                return message(format!("table {database}.{name} already exists"));
            }
            return Err(Error::InvalidArgument(format!(
                "table {database}.{name} already exists (at {}); use IF NOT EXISTS, \
                 or DROP TABLE first",
                existing.location
            )));
        }
        if !self.databases().iter().any(|d| d == database) {
            self.refresh().await?;
            if !self.databases().iter().any(|d| d == database) {
                return Err(Error::InvalidArgument(format!(
                    "database '{database}' does not exist; CREATE DATABASE {database} first"
                )));
            }
        }
        let options = CrawlOptions {
            declared: declared.clone(),
            create_only: true,
            ..CrawlOptions::table(database, name)
        };
        let summary = Crawler::new(self.catalog().clone(), Arc::clone(self.stores()))
            .crawl(parsed.url.as_str(), &options)
            .await?;
        let Some(created) = self.catalog().table(database, name).await? else {
            let mut text = format!(
                "no Parquet files at {location} to make {database}.{name} from; declare \
                 its columns to create it empty"
            );
            for p in &summary.problems {
                text.push_str(&format!("; {}: {}", p.path, p.message));
            }
            return Err(Error::InvalidArgument(text));
        };
        if created.format != format {
            // This statement made the table from what it found; it is not what was
            // asked for, so it goes again.
            self.catalog().drop_table(database, name).await?;
            return Err(Error::InvalidArgument(format!(
                "{location} holds {} files, not {}; nothing was created (use STORED AS \
                 {})",
                created.format.as_str().to_ascii_uppercase(),
                format.as_str().to_ascii_uppercase(),
                created.format.as_str().to_ascii_uppercase()
            )));
        }
        let mut text = if created.format == TableFormat::Delta {
            let properties = self.catalog().table_properties(created.id).await?;
            format!(
                "created Delta table {database}.{name} at version {}",
                properties.delta_version().unwrap_or_default()
            )
        } else {
            format!(
                "created table {database}.{name}: {} files, {} partitions",
                summary.files_added, summary.partitions_added
            )
        };
        for p in &summary.problems {
            text.push_str(&format!("; {}: {}", p.path, p.message));
        }
        message(text)
    }

    /// `ALTER TABLE … DROP PARTITION`: the partitions (and pinned folders) matching each
    /// spec forgotten; their files stay.
    async fn drop_partitions(
        &self,
        database: &str,
        name: &str,
        partitions: &[Vec<(String, String)>],
        if_exists: bool,
    ) -> Result<RecordBatch> {
        let table = self.existing_table(database, name).await?;
        let existing = self.catalog().partitions(table.id).await?;
        let mut pins = self
            .catalog()
            .table_properties(table.id)
            .await?
            .pinned_partitions;
        let pin_count = pins.len();
        let mut dropped = 0;
        let mut files = 0;
        for spec in partitions {
            check_spec(&table, spec)?;
            let matching: Vec<&Vec<Option<String>>> = existing
                .iter()
                .map(|p| &p.values)
                .filter(|values| spec_matches(&table, spec, values))
                .collect();
            // A partition at a folder of the user's choosing is forgotten with its
            // folder, so the next crawl does not bring it back.
            let before = pins.len();
            pins.retain(|p| !spec_matches(&table, spec, &p.values));
            if matching.is_empty() && before == pins.len() && !if_exists {
                return Err(Error::InvalidArgument(format!(
                    "{database}.{name} has no partition ({}); see SHOW PARTITIONS {database}.{name}",
                    spec.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            if matching.is_empty() && before != pins.len() {
                dropped += 1;
            }
            for values in matching {
                files += self.catalog().drop_partition(table.id, values).await?;
                dropped += 1;
            }
        }
        if pins.len() != pin_count {
            self.catalog()
                .set_pinned_partitions(table.id, &pins)
                .await?;
        }
        message(format!(
            "dropped {dropped} partition(s) of {database}.{name}, {files} file(s) \
             forgotten (the files are untouched)"
        ))
    }

    /// `SHOW HISTORY`: a Delta table's commits, or another table's schema versions.
    async fn show_history(
        &self,
        schema: SchemaRef,
        database: &str,
        name: &str,
    ) -> Result<RecordBatch> {
        let table = self.existing_table(database, name).await?;
        let rows: Vec<(i64, String, Option<String>, Option<String>)> =
            if table.format == TableFormat::Delta {
                let location = Location::parse_catalogued(&table.location)?;
                let store = self.stores().store_for(&location)?;
                crate::delta::history(store, &table.location)
                    .await?
                    .into_iter()
                    .map(|c| (c.version as i64, c.committed_at, None, c.operation))
                    .collect()
            } else {
                self.catalog()
                    .schema_history(table.id)
                    .await?
                    .into_iter()
                    .map(|(version, columns, created)| (version, created, Some(columns), None))
                    .collect()
            };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.1))),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.2.as_deref()))),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.3.as_deref()))),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    /// `SHOW CRAWLS`: the last hundred crawls with their counts.
    async fn show_crawls(&self, schema: SchemaRef) -> Result<RecordBatch> {
        let crawls = self.catalog().crawl_history(100).await?;
        let summary: Vec<Option<serde_json::Value>> = crawls
            .iter()
            .map(|c| {
                c.summary
                    .as_deref()
                    .and_then(|s| serde_json::from_str(s).ok())
            })
            .collect();
        let count = |key: &str| -> Int64Array {
            summary
                .iter()
                .map(|s| {
                    let v = s.as_ref()?.get(key)?;
                    v.as_i64().or_else(|| v.as_array().map(|a| a.len() as i64))
                })
                .collect()
        };
        let strings = |f: &dyn Fn(&crate::catalog::store::CrawlRecord) -> Option<String>| {
            Arc::new(StringArray::from(crawls.iter().map(f).collect::<Vec<_>>())) as ArrayRef
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(
                crawls.iter().map(|c| c.id).collect::<Vec<_>>(),
            )),
            strings(&|c| Some(c.location.clone())),
            strings(&|c| Some(c.database.clone())),
            strings(&|c| Some(c.status.clone())),
            strings(&|c| Some(c.started_at.clone())),
            strings(&|c| c.finished_at.clone()),
            Arc::new(count("files_added")),
            Arc::new(count("files_removed")),
            Arc::new(count("problems")),
            strings(&|c| c.summary.clone()),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    /// `SHOW PARTITIONS`: each partition with its files and rows (a Delta table's from
    /// its log at the catalogued version).
    async fn show_partitions(
        &self,
        schema: SchemaRef,
        database: &str,
        name: &str,
    ) -> Result<RecordBatch> {
        let table = self.existing_table(database, name).await?;
        if table.format == TableFormat::Delta {
            // A Delta table's partitions are those of its log at the catalogued version.
            let properties = self.catalog().table_properties(table.id).await?;
            let at = properties
                .delta_version()
                .map_or(crate::delta::At::Newest, crate::delta::At::Version);
            let location = Location::parse_catalogued(&table.location)?;
            let store = self.stores().store_for(&location)?;
            let opened = crate::delta::open(store, &table.location, at).await?;
            let (columns, partitions) = crate::delta::partitions(&opened, &table.location)?;
            if columns.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "table {database}.{name} is not partitioned"
                )));
            }
            let names: Vec<&str> = columns.iter().map(String::as_str).collect();
            let label = |values: &[Option<String>]| partition_label(&names, values);
            let columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from_iter_values(
                    partitions.iter().map(|p| label(&p.values)),
                )),
                Arc::new(Int64Array::from_iter_values(
                    partitions.iter().map(|p| p.files),
                )),
                Arc::new(Int64Array::from_iter(partitions.iter().map(|p| p.rows))),
            ];
            return Ok(RecordBatch::try_new(schema, columns)?);
        }
        if table.partition_columns.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "table {database}.{name} is not partitioned"
            )));
        }
        let partitions = self.catalog().partitions(table.id).await?;
        let names: Vec<&str> = table
            .partition_columns
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        let label = |values: &[Option<String>]| partition_label(&names, values);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(
                partitions
                    .iter()
                    .map(|p| label(&p.values))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                partitions.iter().map(|p| p.file_count).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                partitions.iter().map(|p| p.row_count).collect::<Vec<_>>(),
            )),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

/// A partition as `SHOW PARTITIONS` names it: `k=v/…`, `NULL` for a null value.
pub(crate) fn partition_label(names: &[&str], values: &[Option<String>]) -> String {
    names
        .iter()
        .zip(values)
        .map(|(c, v)| format!("{c}={}", v.as_deref().unwrap_or("NULL")))
        .collect::<Vec<_>>()
        .join("/")
}
