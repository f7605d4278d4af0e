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
//!
//! This module holds the commands and what each statement means ([`recognise`],
//! [`tarn_command`]); running them is in one file per family: `run` (the dispatch),
//! `tables`, `partitions`, `insert`, `show` and `locations`.

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

mod insert;
mod locations;
mod optimize;
mod partitions;
mod run;
mod show;
mod tables;

pub(crate) use partitions::partition_label;

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
    /// `OPTIMIZE d.t [WHERE predicate]`: the small files of the partitions the predicate
    /// (over partition columns, as SQL) selects rewritten into files near a target size.
    Optimize {
        database: String,
        name: String,
        predicate: Option<String>,
    },
    /// `SET`, `RESET`, `USE` or `SHOW` of a session's setting: the front door keeps the
    /// session (see [`super::settings`]).
    Session(crate::engine::settings::SessionCommand),
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
            Command::Optimize { .. } => "OPTIMIZE",
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
            Command::Session(crate::engine::settings::SessionCommand::Show(_)) => {
                crate::engine::settings::show_schema()
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
    if let Some(session) = crate::engine::settings::recognise(statement)? {
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
        Parsed::Optimize { table, predicate } => {
            let (database, name) = table_name(&table, default_db)?;
            Ok(Command::Optimize {
                database,
                name,
                predicate: predicate.map(|p| p.to_string()),
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
