//! The `system` database: Tarn's own state as tables every client can query.
//!
//! - `system.queries`: the query history and the statements still queued or running
//!   (readers see their own; see [`super::history`]);
//! - `system.tables`: every catalogued table with its format, location, columns, partition
//!   columns, files, rows, bytes, partitions and version;
//! - `system.partitions`: every partition of every table, with its files, rows and bytes;
//! - `system.crawls`: the last crawls (as `SHOW CRAWLS`);
//! - `system.materialized_views`: each view with its size, freshness and last error (as
//!   `SHOW MATERIALIZED VIEWS`);
//! - `system.sessions`: the client connections seen in the last [`SESSION_IDLE`], with
//!   their user, address, front door, first and last call, and calls (readers: their own).
//!
//! Each is read when a query scans it, so it is never stale.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

use super::history::{QueriesTable, QueryLabel};
use super::{Engine, Shared};
use crate::error::Error;

/// The database of Tarn's own tables.
pub const SYSTEM_DATABASE: &str = "system";

/// The tables of the `system` database.
const TABLES: [&str; 6] = [
    "queries",
    "tables",
    "partitions",
    "crawls",
    "materialized_views",
    "sessions",
];

/// A connection with no call for this long is no longer listed in `system.sessions`.
pub const SESSION_IDLE: Duration = Duration::from_secs(15 * 60);

#[derive(Debug)]
pub(super) struct SystemDatabase {
    pub(super) shared: Arc<Shared>,
}

#[async_trait]
impl SchemaProvider for SystemDatabase {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(ToString::to_string).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if name == "queries" {
            return Ok(Some(Arc::new(QueriesTable {
                history: Arc::clone(&self.shared.history),
            })));
        }
        Ok(TABLES.contains(&name).then(|| {
            Arc::new(SystemTable {
                shared: Arc::clone(&self.shared),
                name: name.to_string(),
            }) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name)
    }
}

/// One of the system tables other than `queries`.
#[derive(Debug)]
struct SystemTable {
    shared: Arc<Shared>,
    name: String,
}

fn utc_millis() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some(Arc::from("UTC")))
}

fn tables_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("database_name", DataType::Utf8, false),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("format", DataType::Utf8, false),
        Field::new("location", DataType::Utf8, false),
        Field::new("columns", DataType::Utf8, false),
        Field::new("partition_columns", DataType::Utf8, false),
        Field::new("files", DataType::Int64, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("partitions", DataType::Int64, false),
        Field::new("schema_version", DataType::Int64, false),
        Field::new("version", DataType::Int64, false),
        Field::new("updated_at", DataType::Utf8, false),
    ]))
}

fn partitions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("database_name", DataType::Utf8, false),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("partition", DataType::Utf8, false),
        Field::new("location", DataType::Utf8, false),
        Field::new("files", DataType::Int64, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("bytes", DataType::Int64, false),
    ]))
}

fn sessions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_name", DataType::Utf8, false),
        Field::new("client_address", DataType::Utf8, false),
        Field::new("front_door", DataType::Utf8, false),
        Field::new("first_call_at", utc_millis(), false),
        Field::new("last_call_at", utc_millis(), false),
        Field::new("calls", DataType::Int64, false),
    ]))
}

#[async_trait]
impl TableProvider for SystemTable {
    fn schema(&self) -> SchemaRef {
        match self.name.as_str() {
            "tables" => tables_schema(),
            "partitions" => partitions_schema(),
            "crawls" => super::ddl::Command::ShowCrawls.schema(),
            "materialized_views" => crate::rollup::show_schema(),
            _ => sessions_schema(),
        }
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch = self
            .read(state)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let table = MemTable::try_new(self.schema(), vec![vec![batch]])?;
        table.scan(state, projection, filters, limit).await
    }
}

impl SystemTable {
    async fn read(&self, state: &dyn Session) -> crate::Result<RecordBatch> {
        let session = state
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| Error::Internal("a system table read outside a session".into()))?;
        let engine = Engine::over(Arc::clone(&self.shared), session.clone());
        match self.name.as_str() {
            "tables" => tables(&engine).await,
            "partitions" => partitions(&engine).await,
            "crawls" => engine.run_command(&super::ddl::Command::ShowCrawls).await,
            "materialized_views" => engine.show_rollups().await,
            _ => {
                let viewer = state.config().get_extension::<QueryLabel>();
                let only = viewer
                    .as_ref()
                    .filter(|v| !v.admin)
                    .map(|v| v.user.as_str());
                self.shared.sessions.batch(only)
            }
        }
    }
}

async fn tables(engine: &Engine) -> crate::Result<RecordBatch> {
    engine.refresh().await?;
    let entries: Vec<_> = engine
        .tables()
        .into_iter()
        .filter(|t| !crate::rollup::is_storage_table(&t.name))
        .collect();
    let sizes = engine.catalog().table_sizes().await?;
    let size = |id: i64| sizes.get(&id).copied().unwrap_or_default();
    let text = |f: &dyn Fn(&crate::catalog::TableEntry) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(entries.iter().map(f)))
    };
    let int = |f: &dyn Fn(&crate::catalog::TableEntry) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(entries.iter().map(f)))
    };
    let columns = vec![
        text(&|t| t.database.clone()),
        text(&|t| t.name.clone()),
        text(&|t| t.format.to_string()),
        text(&|t| t.location.clone()),
        text(&|t| {
            t.file_schema
                .fields()
                .iter()
                .map(|f| format!("{} {}", f.name(), f.data_type()))
                .collect::<Vec<_>>()
                .join(", ")
        }),
        text(&|t| {
            t.partition_columns
                .iter()
                .map(|c| format!("{} {}", c.name, c.data_type))
                .collect::<Vec<_>>()
                .join(", ")
        }),
        int(&|t| size(t.id).files),
        int(&|t| size(t.id).rows),
        int(&|t| size(t.id).bytes),
        int(&|t| size(t.id).partitions),
        int(&|t| t.schema_version),
        int(&|t| t.version),
        text(&|t| t.updated_at.clone()),
    ];
    Ok(RecordBatch::try_new(tables_schema(), columns)?)
}

/// A partition's database, table and `key=value/…` label, and its entry.
type PartitionRow = (String, String, String, crate::catalog::PartitionEntry);

async fn partitions(engine: &Engine) -> crate::Result<RecordBatch> {
    engine.refresh().await?;
    let mut rows: Vec<PartitionRow> = Vec::new();
    for table in engine.tables() {
        if crate::rollup::is_storage_table(&table.name) || table.partition_columns.is_empty() {
            continue;
        }
        let names: Vec<&str> = table
            .partition_columns
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        for p in engine.catalog().partitions(table.id).await? {
            let label = super::ddl::partition_label(&names, &p.values);
            rows.push((table.database.clone(), table.name.clone(), label, p));
        }
    }
    let text = |f: &dyn Fn(&PartitionRow) -> String| {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f))) as ArrayRef
    };
    let int = |f: &dyn Fn(&crate::catalog::PartitionEntry) -> i64| {
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| f(&r.3)))) as ArrayRef
    };
    let columns = vec![
        text(&|r| r.0.clone()),
        text(&|r| r.1.clone()),
        text(&|r| r.2.clone()),
        text(&|r| r.3.location.clone()),
        int(&|p| p.file_count),
        int(&|p| p.row_count),
        int(&|p| p.total_bytes),
    ];
    Ok(RecordBatch::try_new(partitions_schema(), columns)?)
}

/// The client connections a server has seen, by user, address and front door.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    seen: Mutex<HashMap<(String, String, &'static str), Seen>>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    calls: i64,
}

impl Sessions {
    /// A call from `user` at `address` through `front_door`.
    pub(crate) fn call(&self, user: &str, address: &str, front_door: &'static str) {
        let now = Utc::now();
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        let idle = chrono::TimeDelta::from_std(SESSION_IDLE).unwrap_or(chrono::TimeDelta::MAX);
        seen.retain(|_, s| now - s.last < idle);
        let entry = seen
            .entry((user.to_string(), address.to_string(), front_door))
            .or_insert(Seen {
                first: now,
                last: now,
                calls: 0,
            });
        entry.last = now;
        entry.calls += 1;
    }

    fn batch(&self, user: Option<&str>) -> crate::Result<RecordBatch> {
        let idle = chrono::TimeDelta::from_std(SESSION_IDLE).unwrap_or(chrono::TimeDelta::MAX);
        let now = Utc::now();
        let mut rows: Vec<((String, String, &'static str), Seen)> = self
            .seen
            .lock()
            .map(|s| {
                s.iter()
                    .filter(|(k, s)| now - s.last < idle && user.is_none_or(|u| k.0 == u))
                    .map(|(k, s)| (k.clone(), *s))
                    .collect()
            })
            .unwrap_or_default();
        rows.sort_by(|a, b| a.1.first.cmp(&b.1.first).then_with(|| a.0.cmp(&b.0)));
        let at = |f: fn(&Seen) -> DateTime<Utc>| -> ArrayRef {
            Arc::new(
                TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| f(&r.1).timestamp_millis()),
                )
                .with_timezone("UTC"),
            )
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0.1))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0.2))),
            at(|s| s.first),
            at(|s| s.last),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1.calls))),
        ];
        Ok(RecordBatch::try_new(sessions_schema(), columns)?)
    }
}
