//! `OPTIMIZE`: a table's small files rewritten into files near a target size, partition by
//! partition, as a Firehose-style writer's thousands of small files slow every query that
//! opens them. Each partition's rewrite is one commit swapping its new files in for the ones
//! it read ([`crate::ingest::rewrite`]); the old files are deleted after the grace period
//! (a query planned before the swap still reads them) and crawls leave them out meanwhile.
//! Incremental: files at or above the target stay, and a partition with fewer than two
//! files below it is already compact.

use arrow::array::{Array, BooleanArray};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::prelude::SessionContext;

use super::*;
use crate::catalog::FileEntry;
use crate::table::{CatalogTable, partition_scalar};

/// The size `OPTIMIZE` writes files to; a file below it is worth rewriting.
pub const OPTIMIZE_TARGET_BYTES: u64 = 128 << 20;

/// What an `OPTIMIZE` did, for its message.
#[derive(Default)]
struct Optimized {
    partitions: u64,
    files_read: u64,
    bytes_read: u64,
    files_written: u64,
    bytes_written: u64,
    already_compact: u64,
}

impl Engine {
    /// `OPTIMIZE database.name [WHERE predicate]`: in each partition the predicate (over the
    /// partition columns) selects, the files below [`OPTIMIZE_TARGET_BYTES`] are rewritten
    /// into as few files as that size allows, one commit per partition. Returns what it
    /// did.
    ///
    /// # Errors
    /// [`Error::TableNotFound`]; [`Error::InvalidArgument`] for a table Tarn does not write
    /// (Delta, CSV, JSON, a view's storage); [`Error::Sql`] for a predicate that is not a
    /// condition on partition columns; [`Error::Conflict`] when another writer rewrote or
    /// removed a partition's files meanwhile (the partitions done before stay done).
    pub(super) async fn optimize(
        &self,
        database: &str,
        name: &str,
        predicate: Option<&str>,
    ) -> Result<String> {
        let table = self.optimizable(database, name).await?;
        let mut partitions = self.files_by_partition(&table).await?;
        if let Some(sql) = predicate {
            let selected = self.selected_partitions(&table, &partitions, sql)?;
            partitions.retain(|folder, _| selected.contains(folder));
        }
        let done = self.compact(&table, partitions).await?;
        Ok(done.message(&format!("{database}.{name}")))
    }

    /// Automatic compaction (`tarn serve --auto-optimize-min-files`): every partition of a
    /// Parquet table holding at least `min_files` files below [`OPTIMIZE_TARGET_BYTES`] is
    /// compacted as `OPTIMIZE` would. A table that fails (another writer rewrote a
    /// partition first) is logged and the others go on. Returns the partitions compacted.
    ///
    /// # Errors
    /// [`Error::Catalog`] when the catalog cannot be read.
    pub async fn auto_optimize(&self, min_files: u64) -> Result<u64> {
        let crowded = self
            .catalog()
            .crowded_partitions(OPTIMIZE_TARGET_BYTES, min_files.max(2))
            .await?;
        let mut by_table: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for (database, name, folder) in crowded {
            by_table.entry((database, name)).or_default().push(folder);
        }
        let mut compacted = 0;
        for ((database, name), folders) in by_table {
            if crate::rollup::is_storage_table(&name) {
                continue;
            }
            let compacted_here = async {
                let table = self.optimizable(&database, &name).await?;
                let mut partitions = self.files_by_partition(&table).await?;
                partitions.retain(|folder, _| folders.contains(folder));
                self.compact(&table, partitions).await
            };
            match compacted_here.await {
                Ok(done) => compacted += done.partitions,
                Err(e) => tracing::warn!(
                    table = %format!("{database}.{name}"),
                    error = %e,
                    "automatic compaction of a table failed; the next check tries again"
                ),
            }
        }
        Ok(compacted)
    }

    /// The table, when `OPTIMIZE` can rewrite it.
    async fn optimizable(&self, database: &str, name: &str) -> Result<crate::catalog::TableEntry> {
        let qualified = format!("{database}.{name}");
        let Some(table) = self.catalog().table(database, name).await? else {
            return Err(Error::TableNotFound { name: qualified });
        };
        match table.format {
            TableFormat::Parquet => {}
            TableFormat::Delta => {
                return Err(Error::InvalidArgument(format!(
                    "{qualified} is a Delta table, whose log owns its files; compact it with \
                     Delta's own OPTIMIZE"
                )));
            }
            other => {
                return Err(Error::InvalidArgument(format!(
                    "{qualified} is stored as {other}; OPTIMIZE rewrites Parquet tables \
                     (CREATE TABLE … AS SELECT makes a Parquet copy)"
                )));
            }
        }
        if crate::rollup::is_storage_table(name) {
            return Err(Error::InvalidArgument(format!(
                "{qualified} holds a materialized view's rows, one file per partition \
                 already; REFRESH MATERIALIZED VIEW rewrites it"
            )));
        }
        Ok(table)
    }

    /// The table's catalogued files by partition folder.
    async fn files_by_partition(
        &self,
        table: &crate::catalog::TableEntry,
    ) -> Result<BTreeMap<String, Vec<FileEntry>>> {
        let mut partitions: BTreeMap<String, Vec<FileEntry>> = BTreeMap::new();
        for file in self.catalog().files(table.id).await? {
            partitions
                .entry(file.partition_location.clone())
                .or_default()
                .push(file);
        }
        Ok(partitions)
    }

    /// Rewrites the small files of each of `partitions` (one commit each), then refreshes
    /// the catalog snapshot and the views over the table.
    async fn compact(
        &self,
        table: &crate::catalog::TableEntry,
        partitions: BTreeMap<String, Vec<FileEntry>>,
    ) -> Result<Optimized> {
        let location = Location::parse_catalogued(&table.location)?;
        let known = if table.partition_columns.is_empty() {
            Vec::new()
        } else {
            self.catalog().partitions(table.id).await?
        };
        let mut done = Optimized::default();
        for files in partitions.into_values() {
            let small: Vec<FileEntry> = files
                .into_iter()
                .filter(|f| f.size < OPTIMIZE_TARGET_BYTES)
                .collect();
            if small.len() < 2 {
                done.already_compact += 1;
                continue;
            }
            let ctx = SessionContext::new_with_state(self.base_state().clone());
            let provider =
                CatalogTable::try_new(table.clone(), small.clone(), location.store_url(), None)?;
            let rows = crate::engine::ctas::rows_of(ctx.read_table(Arc::new(provider))?).await?;
            let rewrite = crate::ingest::Rewrite {
                catalog: self.catalog(),
                stores: self.stores(),
                table,
                partitions: &known,
                replaced: small.iter().map(|f| f.path.clone()).collect(),
                file_bytes: OPTIMIZE_TARGET_BYTES,
            };
            let written = crate::ingest::rewrite(rewrite, rows).await?;
            done.partitions += 1;
            done.files_read += small.len() as u64;
            done.bytes_read += small.iter().map(|f| f.size).sum::<u64>();
            done.files_written += written.len() as u64;
            done.bytes_written += written.iter().map(|f| f.size).sum::<u64>();
        }
        if done.partitions > 0 {
            self.refresh().await?;
            self.refresh_stale_rollups().await;
            tracing::info!(
                table = %format!("{}.{}", table.database, table.name),
                partitions = done.partitions,
                files_read = done.files_read,
                files_written = done.files_written,
                "optimized"
            );
        }
        Ok(done)
    }

    /// The partition folders whose values satisfy `sql`, a condition on the table's
    /// partition columns.
    fn selected_partitions(
        &self,
        table: &crate::catalog::TableEntry,
        partitions: &BTreeMap<String, Vec<FileEntry>>,
        sql: &str,
    ) -> Result<std::collections::HashSet<String>> {
        let qualified = format!("{}.{}", table.database, table.name);
        if table.partition_columns.is_empty() {
            return Err(Error::Sql(format!(
                "{qualified} has no partition columns; OPTIMIZE … WHERE selects partitions, \
                 so leave the WHERE out to optimize the whole table"
            )));
        }
        let fields: Vec<Field> = table
            .partition_columns
            .iter()
            .map(|c| Field::new(&c.name, c.data_type.arrow_type(), true))
            .collect();
        let folders: Vec<&String> = partitions.keys().collect();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(fields.len());
        for (k, column) in table.partition_columns.iter().enumerate() {
            let values = partitions.values().map(|files| {
                let raw = files
                    .first()
                    .and_then(|f| f.partition_values.get(k))
                    .and_then(|v| v.as_deref());
                partition_scalar(raw, column.data_type)
            });
            columns.push(if folders.is_empty() {
                arrow::array::new_null_array(&column.data_type.arrow_type(), 0)
            } else {
                ScalarValue::iter_to_array(values)?
            });
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        let names: Vec<&str> = table
            .partition_columns
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        let not_a_condition = |e: String| {
            Error::Sql(format!(
                "OPTIMIZE {qualified} WHERE {sql}: {e}; the condition may name only the \
                 partition columns ({})",
                names.join(", ")
            ))
        };
        let ctx = SessionContext::new_with_state(self.base_state().clone());
        let schema = DFSchema::try_from(batch.schema().as_ref().clone())?;
        let expr = ctx
            .parse_sql_expr(sql, &schema)
            .map_err(|e| not_a_condition(e.to_string()))?;
        let physical = ctx
            .create_physical_expr(expr, &schema)
            .map_err(|e| not_a_condition(e.to_string()))?;
        let mask = physical.evaluate(&batch)?.into_array(batch.num_rows())?;
        let Some(mask) = mask.as_any().downcast_ref::<BooleanArray>() else {
            return Err(not_a_condition(format!(
                "it gives {}, not true or false",
                mask.data_type()
            )));
        };
        Ok(folders
            .into_iter()
            .enumerate()
            .filter(|(i, _)| mask.is_valid(*i) && mask.value(*i))
            .map(|(_, folder)| folder.clone())
            .collect())
    }
}

impl Optimized {
    fn message(&self, qualified: &str) -> String {
        let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
        let target = OPTIMIZE_TARGET_BYTES >> 20;
        let compact = match self.already_compact {
            0 => String::new(),
            1 => "; 1 partition was already compact".to_string(),
            n => format!("; {n} partitions were already compact"),
        };
        if self.partitions == 0 {
            return format!(
                "{qualified} is already compact: no partition has two files under {target} MiB"
            );
        }
        format!(
            "optimized {qualified}: {} files ({:.1} MiB) in {} partition{} rewritten into {} \
             file{} ({:.1} MiB){compact}",
            self.files_read,
            mib(self.bytes_read),
            self.partitions,
            if self.partitions == 1 { "" } else { "s" },
            self.files_written,
            if self.files_written == 1 { "" } else { "s" },
            mib(self.bytes_written),
        )
    }
}
