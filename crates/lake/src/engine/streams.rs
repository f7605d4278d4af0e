//! Streaming ingest in the engine: appends checked against the catalog, the log replayed
//! at start, and buffers delivered to the lake by a background task (see
//! [`crate::stream`]).

use std::collections::HashMap;
use std::time::Duration;

use arrow::array::RecordBatch;

use super::Engine;
use crate::error::{Error, Result};
use crate::stream::{Ack, StreamOptions, TableKey, wal::Wal};

impl Engine {
    /// Opens the stream log under `options.dir`, replays the records not yet delivered
    /// into the buffers (visible to queries at once), and starts delivering buffers in
    /// the background. Returns the number of records replayed.
    ///
    /// # Errors
    /// [`Error::Io`] when the log cannot be read; catalog errors.
    pub async fn start_streams(&self, options: StreamOptions) -> Result<usize> {
        let dir = options.dir.clone();
        let (wal, frames) = tokio::task::spawn_blocking(move || Wal::open(&dir))
            .await
            .map_err(|e| Error::Internal(format!("opening the stream log: {e}")))??;
        let delivered = self.catalog().stream_positions(wal.id()).await?;
        self.refresh().await?;
        let tables: HashMap<i64, TableKey> = self
            .tables_by_id()
            .into_iter()
            .map(|(id, e)| {
                (
                    id,
                    TableKey {
                        id,
                        database: e.database,
                        name: e.name,
                    },
                )
            })
            .collect();
        let tick = (options.flush_age / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let replayed = self
            .streams()
            .start(options, wal, frames, &tables, &delivered)?;
        if replayed > 0 {
            tracing::info!(records = replayed, "stream records replayed from the log");
        }
        tokio::spawn(delivery_loop(self.clone(), tick));
        Ok(replayed)
    }

    /// Appends `batch` to the stream of `database.table` (the default database when
    /// `None`); returns once the records are durable and visible to queries.
    ///
    /// # Errors
    /// [`Error::TableNotFound`]; [`Error::InvalidArgument`] when the table cannot take
    /// streamed records (not Parquet, a view's storage) or the records do not fit its
    /// columns; [`Error::ResourceExhausted`] when the buffers are full (retry).
    pub async fn stream_append(
        &self,
        database: Option<&str>,
        table: &str,
        batch: RecordBatch,
    ) -> Result<Ack> {
        let (database, entry) = self.stream_table(database, table).await?;
        let qualified = format!("{database}.{table}");
        if entry.format != crate::catalog::TableFormat::Parquet {
            return Err(Error::InvalidArgument(format!(
                "table {qualified} is stored as {}; streams deliver to Parquet tables only",
                entry.format
            )));
        }
        if crate::rollup::is_storage_table(table) {
            return Err(Error::InvalidArgument(format!(
                "{qualified} holds a materialized view's rows; stream into its base table"
            )));
        }
        if batch.num_rows() == 0 {
            return Ok(Ack { lsn: 0, rows: 0 });
        }
        let schema = entry.table_schema();
        let batch = crate::stream::conform(&batch, &schema, &qualified, true)?;
        let key = TableKey {
            id: entry.id,
            database,
            name: table.to_string(),
        };
        self.streams().append(key, batch).await
    }

    /// The schema records streamed into `database.table` take (its columns and partition
    /// columns).
    ///
    /// # Errors
    /// [`Error::TableNotFound`].
    pub async fn stream_schema(
        &self,
        database: Option<&str>,
        table: &str,
    ) -> Result<arrow::datatypes::SchemaRef> {
        let (_, entry) = self.stream_table(database, table).await?;
        Ok(entry.table_schema())
    }

    /// The catalog entry of the table a stream names, with its database.
    async fn stream_table(
        &self,
        database: Option<&str>,
        table: &str,
    ) -> Result<(String, crate::catalog::TableEntry)> {
        let database = database
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| self.default_database());
        if let Some(entry) = self.snapshot_entry(&database, table) {
            return Ok((database, entry));
        }
        self.refresh().await?;
        match self.snapshot_entry(&database, table) {
            Some(entry) => Ok((database, entry)),
            None => Err(Error::TableNotFound {
                name: format!("{database}.{table}"),
            }),
        }
    }

    /// Delivers the buffers that are due (every buffer with records when `all`): each
    /// table's records in one catalog commit. Returns the number of tables delivered.
    ///
    /// # Errors
    /// Catalog errors while refreshing afterwards; a table's failed delivery is logged and
    /// retried by a later pass, its records staying buffered and in the log.
    pub async fn deliver_streams(&self, all: bool) -> Result<usize> {
        let streams = self.streams();
        let Some(log) = streams.log_id().map(str::to_string) else {
            return Ok(0);
        };
        let _one_pass = self.shared.delivering.lock().await;
        let mut delivered = 0;
        for due in streams.take_due(all) {
            let key = &due.table;
            let qualified = format!("{}.{}", key.database, key.name);
            let entry = match self.catalog().table(&key.database, &key.name).await {
                Ok(Some(e)) if e.id == key.id => e,
                Ok(_) => {
                    streams.discard(key.id);
                    continue;
                }
                Err(e) => {
                    streams.not_delivered(&due);
                    tracing::warn!(table = %qualified, error = %e, "stream delivery failed; retrying later");
                    continue;
                }
            };
            let to = crate::ingest::Destination {
                catalog: self.catalog(),
                stores: self.stores(),
                database: key.database.clone(),
                database_exists: true,
                warehouse: Err(Error::Internal("a delivery creates no table".into())),
            };
            let batches = due.batches.clone();
            match crate::ingest::deliver(
                to,
                &entry,
                batches,
                (log.clone(), due.newest_lsn),
                streams.gate(),
            )
            .await
            {
                Ok((_, guard)) => {
                    streams.delivered(&due);
                    drop(guard);
                    self.forget_provider(key.id);
                    delivered += 1;
                }
                Err(e) => {
                    streams.not_delivered(&due);
                    tracing::warn!(table = %qualified, error = %e, "stream delivery failed; retrying later");
                }
            }
        }
        if delivered > 0 {
            self.refresh().await?;
            self.refresh_stale_rollups().await;
        }
        streams.forget_delivered();
        Ok(delivered)
    }
}

/// Delivers due buffers every `tick`, and at once when a buffer reaches its size.
async fn delivery_loop(engine: Engine, tick: Duration) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = engine.streams().due.notified() => {}
        }
        if let Err(e) = engine.deliver_streams(false).await {
            tracing::warn!(error = %e, "stream delivery pass failed");
        }
    }
}
