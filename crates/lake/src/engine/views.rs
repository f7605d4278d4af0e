//! Materialized views as the engine runs them: `CREATE`, refresh (incremental, per group
//! of stale partitions, each group swapped in one commit), the refreshes that follow a
//! crawl or ingest, `DROP`, `SHOW`, and the deferred deletion of replaced files. What a
//! view is (definition, storage naming, fingerprints, the rewrite) lives in
//! [`crate::rollup`].

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::SchemaRef;
use chrono::{DateTime, SecondsFormat, Utc};
use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;
use object_store::path::Path;

use crate::catalog::{RollupDef, RollupRecord, TableCommit, TableFormat};
use crate::error::{Error, Result};
use crate::rollup::{
    Comparison, PARTITIONS_PER_QUERY, REFRESH_ATTEMPTS, RefreshFailure, RefreshReport,
    RollupSummary, StalePartition, compute, conform, file_schema, fingerprint, groups,
    partition_folder, rows_of, show_schema, storage_table, typed,
};
use crate::storage::Location;

use super::Engine;

impl Engine {
    /// Defines a rollup and computes it.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] for a name taken by a rollup or table; as
    /// [`Engine::refresh_rollup`].
    pub async fn create_rollup(&self, def: RollupDef, if_not_exists: bool) -> Result<String> {
        self.refresh().await?;
        if self.rollup(&def.database, &def.name).await?.is_some() {
            if if_not_exists {
                return Ok(format!(
                    "materialized view {}.{} already exists",
                    def.database, def.name
                ));
            }
            return Err(Error::AlreadyExists(format!(
                "materialized view '{}.{}' already exists; DROP MATERIALIZED VIEW it first to \
                 redefine it",
                def.database, def.name
            )));
        }
        if let Some(base) = self
            .catalog()
            .table(&def.base_database, &def.base_table)
            .await?
            && base.format == TableFormat::Delta
        {
            return Err(Error::InvalidArgument(format!(
                "{}.{} is a Delta table: materialized views are kept per partition of \
                 catalogued Parquet files, which a Delta table does not have in the catalog; \
                 define the view over a Parquet table",
                def.base_database, def.base_table
            )));
        }
        if self
            .catalog()
            .table(&def.database, &def.name)
            .await?
            .is_some()
        {
            return Err(Error::AlreadyExists(format!(
                "'{}.{}' is a table; pick another name for the materialized view",
                def.database, def.name
            )));
        }
        // The storage location must be writable before anything is recorded.
        self.warehouse_location(&def.database, &storage_table(&def.name))?;
        self.catalog().create_rollup(&def).await?;
        let report = self.refresh_rollup(&def.database, &def.name, true).await?;
        Ok(format!(
            "created materialized view {}.{}: {report}",
            def.database, def.name
        ))
    }

    /// A rollup's record.
    ///
    /// # Errors
    /// [`Error::Catalog`] when the catalog cannot be read.
    pub async fn rollup(&self, database: &str, name: &str) -> Result<Option<RollupRecord>> {
        Ok(self
            .catalog()
            .rollups()
            .await?
            .into_iter()
            .find(|r| r.definition.database == database && r.definition.name == name))
    }

    /// Brings a rollup up to date with its base: recomputes the base partitions whose files
    /// changed (every partition with `full`), drops those whose base partition is gone.
    /// Partitions are committed in groups, each group atomically; an interrupted refresh
    /// leaves the groups before it committed and the rest as they were.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown rollup; [`Error::TableNotFound`] when its
    /// base table is gone; query and store errors while computing (files written by the
    /// failed group are deleted).
    pub async fn refresh_rollup(
        &self,
        database: &str,
        name: &str,
        full: bool,
    ) -> Result<RefreshReport> {
        let started = Utc::now();
        let clock = std::time::Instant::now();
        // Another refresh of the same view (a server's beside a CLI's, or one abandoned
        // mid-commit) may replace a partition this one read: its commit then fails and
        // changes nothing, and the refresh starts again from what is there now.
        let mut result = Err(Error::Internal("a refresh ran no attempt".into()));
        for _ in 0..REFRESH_ATTEMPTS {
            // Boxed: the refresh's future is large, and callers nest it in their own (a
            // crawl, a DDL statement), which in a debug build overflowed a test thread's
            // stack.
            result = Box::pin(self.refresh_rollup_once(database, name, full)).await;
            if !matches!(result, Err(Error::Conflict(_))) {
                break;
            }
        }
        if let Err(e) = &result
            && !matches!(e, Error::InvalidArgument(_))
        {
            // Recorded so that queries stop using the view and operators see why; a view
            // whose definition no longer plans fails the same way every time.
            let at = started.to_rfc3339_opts(SecondsFormat::Millis, true);
            if let Err(record) = self
                .catalog()
                .rollup_failed(database, name, &at, &e.to_string())
                .await
            {
                tracing::warn!(error = %record, "could not record a failed rollup refresh");
            }
            let _ = self.refresh().await;
        }
        self.metrics().refreshed(result.is_ok(), clock.elapsed());
        result
    }

    /// The raw values (folder names) of the base table's partitions, cut to the view's
    /// partition columns `prefix`, by their typed values.
    async fn raw_partition_values(
        &self,
        table_id: i64,
        prefix: &[crate::catalog::PartitionColumn],
    ) -> Result<HashMap<Vec<ScalarValue>, Vec<Option<String>>>> {
        let types: Vec<_> = prefix.iter().map(|c| c.data_type).collect();
        let mut raw = HashMap::new();
        for mut partition in self.catalog().partitions(table_id).await? {
            partition.values.truncate(prefix.len());
            let key = typed(&partition.values, &types);
            raw.entry(key).or_insert(partition.values);
        }
        Ok(raw)
    }

    /// One attempt of [`Engine::refresh_rollup`].
    async fn refresh_rollup_once(
        &self,
        database: &str,
        name: &str,
        full: bool,
    ) -> Result<RefreshReport> {
        let record = self.rollup(database, name).await?.ok_or_else(|| {
            Error::InvalidArgument(format!(
                "materialized view '{database}.{name}' does not exist; see SHOW MATERIALIZED VIEWS"
            ))
        })?;
        let def = record.definition;
        let started = Utc::now();
        let base = self.table(&def.base_database, &def.base_table).await?;
        let base_entry = base.entry().clone();
        let depth = def.depth(base_entry.partition_columns.len());
        let prefix = &base_entry.partition_columns[..depth];
        let storage_name = storage_table(&def.name);
        let (location, storage) = match self.catalog().table(&def.database, &storage_name).await? {
            Some(t) => (
                Location::parse_catalogued(&t.location)?,
                Some(self.table(&def.database, &storage_name).await?),
            ),
            None => (self.warehouse_location(&def.database, &storage_name)?, None),
        };
        let store = self.stores().store_for(&location)?;
        let storage_files: HashMap<Vec<ScalarValue>, Vec<String>> = storage
            .as_deref()
            .map(|s| {
                s.partition_files()
                    .into_iter()
                    .map(|(k, files)| (k, files.iter().map(|f| f.location.to_string()).collect()))
                    .collect()
            })
            .unwrap_or_default();
        let comparison = Comparison::of(&base, storage.as_deref(), depth);

        let raw = self.raw_partition_values(base_entry.id, prefix).await?;
        let mut report = RefreshReport {
            removed: comparison.gone.len(),
            ..RefreshReport::default()
        };
        let stale = to_compute(&base, depth, full, comparison.stale, &raw);
        report.unchanged = comparison.partitions - stale.len();

        // The base is read as it is: answering the refresh from the view being refreshed
        // would read the rows it replaces.
        let ctx = SessionContext::new_with_state(self.without_rollup_rewrite().files_only_state());
        let mut storage_schema: Option<SchemaRef> =
            storage.as_ref().map(|s| s.entry().file_schema.clone());
        let commit = |schema: SchemaRef, upserts, removals| TableCommit {
            database: def.database.clone(),
            name: storage_name.clone(),
            location: location.to_string(),
            format: TableFormat::Parquet,
            partition_columns: prefix.to_vec(),
            // The view's own columns: a refresh's schema replaces the storage's.
            file_schema: schema,
            base_schema_version: None,
            upserts,
            removals,
            declared: None,
            format_state: None,
            create_only: false,
            one_file_per_partition: true,
            removals_read: false,
            from_listing: false,
            stream_flushed: None,
        };
        for group in stale.chunks(PARTITIONS_PER_QUERY) {
            let (result_schema, batches) = compute(&ctx, &def, prefix, group).await?;
            let schema = storage_schema
                .get_or_insert_with(|| file_schema(&result_schema, &def))
                .clone();
            // Each file's path is recorded before anything is written: an interrupted
            // refresh leaves nothing behind after the sweep.
            let planned = planned_files(&location, prefix, group);
            let written: Vec<String> = planned.iter().map(|(_, p)| p.to_string()).collect();
            crate::deferred::record_writes(self.catalog(), &location, &written).await?;
            let result = async {
                let files = GroupFiles {
                    store: &store,
                    schema: &schema,
                    batches: &batches,
                    prefix,
                };
                let (upserts, rows) = files.write(group, planned).await?;
                report.rows += rows;
                let removals: Vec<String> = group
                    .iter()
                    .filter_map(|(key, ..)| storage_files.get(key))
                    .flatten()
                    .cloned()
                    .collect();
                self.catalog()
                    .commit_table(&commit(Arc::clone(&schema), upserts, removals.clone()))
                    .await?;
                Ok::<_, Error>(removals)
            }
            .await;
            match result {
                Ok(removals) => {
                    self.defer_deletes(&location, removals).await;
                    report.refreshed += group.len();
                }
                Err(e) => {
                    crate::deferred::delete_quietly(&store, written).await;
                    return Err(e);
                }
            }
        }
        // Storage partitions whose base partition is gone (the storage exists: they are in it).
        let gone: Vec<String> = comparison
            .gone
            .iter()
            .filter_map(|k| storage_files.get(k))
            .flatten()
            .cloned()
            .collect();
        if let (false, Some(schema)) = (gone.is_empty(), storage_schema) {
            self.catalog()
                .commit_table(&commit(schema, Vec::new(), gone.clone()))
                .await?;
            self.defer_deletes(&location, gone).await;
        }
        self.catalog()
            .rollup_refreshed(
                &def.database,
                &def.name,
                &started.to_rfc3339_opts(SecondsFormat::Millis, true),
            )
            .await?;
        self.refresh().await?;
        tracing::info!(rollup = %format!("{}.{}", def.database, def.name), %report, "refreshed");
        Ok(report)
    }

    /// Refreshes every rollup that has not caught up with its base (after a crawl or
    /// ingest, and on the server's schedule). One pass runs at a time; a pass that finds
    /// another running returns at once. A rollup whose refresh fails is recorded as failed
    /// (`SHOW MATERIALIZED VIEWS` gives the error) and answers no query until a refresh
    /// succeeds: queries read its base. Returns the failures, for the crawl's summary.
    pub async fn refresh_stale_rollups(&self) -> Vec<RefreshFailure> {
        let Some(_running) = self.rollup_refresh_guard() else {
            return Vec::new();
        };
        if let Err(e) = self.sweep_deferred_deletes(Utc::now()).await {
            tracing::warn!(error = %e, "could not delete replaced rollup files; will retry");
        }
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "could not read the catalog to refresh rollups");
            return Vec::new();
        }
        let mut failures = Vec::new();
        for state in self.rollup_states() {
            let d = &state.def;
            if state.stale.is_empty()
                && state.excluded.is_empty()
                && state.storage.is_some()
                && state.last_error.is_none()
            {
                continue;
            }
            if let Err(e) = self.refresh_rollup(&d.database, &d.name, false).await {
                let view = format!("{}.{}", d.database, d.name);
                tracing::warn!(rollup = %view, error = %e,
                    "rollup refresh failed; queries read its base until a refresh succeeds");
                failures.push(RefreshFailure {
                    view,
                    error: e.to_string(),
                });
            }
        }
        failures
    }

    /// After a crawl: refreshes the views it left stale and reports those whose refresh
    /// failed among the crawl's problems, in its summary and in the crawl history.
    pub async fn refresh_after_crawl(&self, summary: &mut crate::crawler::CrawlSummary) {
        self.refresh_after_crawls(std::slice::from_mut(summary))
            .await;
    }

    /// [`Engine::refresh_after_crawl`] for several crawls (a scheduler's tick): the views
    /// are refreshed once and each crawl reports the failures.
    pub async fn refresh_after_crawls(&self, summaries: &mut [crate::crawler::CrawlSummary]) {
        let failures = self.refresh_stale_rollups().await;
        if failures.is_empty() {
            return;
        }
        for summary in summaries {
            summary
                .problems
                .extend(failures.iter().map(|f| crate::crawler::Problem {
                    path: f.view.clone(),
                    message: f.to_string(),
                }));
            if let Some(id) = summary.crawl_id {
                let json = serde_json::to_string(&*summary).unwrap_or_default();
                if let Err(e) = self.catalog().finish_crawl(id, "succeeded", &json).await {
                    tracing::warn!(error = %e,
                        "could not record the failed refreshes in the crawl history");
                }
            }
        }
    }

    /// Drops a rollup: its definition, its storage table and its files. Returns whether
    /// it existed.
    ///
    /// # Errors
    /// [`Error::Catalog`] when the catalog cannot be written.
    pub async fn drop_rollup(&self, database: &str, name: &str) -> Result<bool> {
        let storage_name = storage_table(name);
        let files = match self.catalog().table(database, &storage_name).await? {
            Some(t) => Some((
                Location::parse_catalogued(&t.location)?,
                self.catalog().file_index(t.id).await?,
            )),
            None => None,
        };
        let dropped = self
            .catalog()
            .drop_rollup(database, name, &storage_name)
            .await?;
        if let Some((location, files)) = files {
            self.defer_deletes(&location, files.into_iter().map(|f| f.path).collect())
                .await;
        }
        self.refresh().await?;
        Ok(dropped)
    }

    /// `SHOW MATERIALIZED VIEWS`: every rollup with its size and freshness.
    ///
    /// # Errors
    /// [`Error::Catalog`] when the catalog cannot be read.
    pub async fn show_rollups(&self) -> Result<RecordBatch> {
        let views = self.rollup_summaries().await?;
        let text = |f: fn(&RollupSummary) -> Option<String>| {
            Arc::new(StringArray::from(views.iter().map(f).collect::<Vec<_>>())) as ArrayRef
        };
        let number = |f: fn(&RollupSummary) -> Option<i64>| {
            Arc::new(Int64Array::from(views.iter().map(f).collect::<Vec<_>>())) as ArrayRef
        };
        let columns = vec![
            text(|v| Some(v.name.clone())),
            text(|v| Some(v.base_table.clone())),
            number(|v| v.rows),
            number(|v| v.bytes),
            number(|v| v.partitions),
            number(|v| v.stale_partitions),
            text(|v| v.refreshed_at.clone()),
            text(|v| Some(v.definition.clone())),
            text(|v| v.last_error.clone()),
        ];
        Ok(RecordBatch::try_new(show_schema(), columns)?)
    }

    /// Every rollup with its size and freshness (`SHOW MATERIALIZED VIEWS`, the admin API).
    ///
    /// # Errors
    /// [`Error::Catalog`] when the catalog cannot be read.
    pub async fn rollup_summaries(&self) -> Result<Vec<RollupSummary>> {
        self.refresh().await?;
        let states = self.rollup_states();
        Ok(self
            .catalog()
            .rollups()
            .await?
            .into_iter()
            .map(|r| {
                let d = r.definition;
                let state = states
                    .iter()
                    .find(|s| s.def.database == d.database && s.def.name == d.name);
                let (rows, bytes) = state
                    .and_then(|s| s.storage.as_ref())
                    .map(|t| t.size())
                    .unwrap_or((0, 0));
                RollupSummary {
                    name: format!("{}.{}", d.database, d.name),
                    base_table: format!("{}.{}", d.base_database, d.base_table),
                    rows: state.map(|_| rows as i64),
                    bytes: state.map(|_| bytes as i64),
                    partitions: state.map(|s| s.base_partitions as i64),
                    stale_partitions: state.map(|s| s.stale.len() as i64),
                    refreshed_at: r.refreshed_at,
                    definition: d.sql,
                    last_error: r.last_error.map(|e| match r.last_error_at {
                        Some(at) => format!("{at}: {e}"),
                        None => e,
                    }),
                }
            })
            .collect())
    }
}

impl Engine {
    /// Schedules replaced files of `location` for deletion after [`DELETE_GRACE`].
    async fn defer_deletes(&self, location: &Location, paths: Vec<String>) {
        crate::deferred::defer(self.catalog(), location, paths).await;
    }

    /// Deletes the replaced files whose grace period ended by `now` (after every crawl,
    /// ingest and server tick). Returns how many deletions were carried out.
    ///
    /// # Errors
    /// [`Error::Catalog`] when the catalog cannot be read or written.
    pub async fn sweep_deferred_deletes(&self, now: DateTime<Utc>) -> Result<usize> {
        crate::deferred::sweep(self.catalog(), self.stores(), now).await
    }
}

/// The partitions a refresh recomputes: every one of `base` (`full`) or the `stale` ones,
/// each with its raw values (from `raw`) and fingerprint, in the order of their values.
fn to_compute(
    base: &crate::table::CatalogTable,
    depth: usize,
    full: bool,
    stale: Vec<(Vec<ScalarValue>, String)>,
    raw: &HashMap<Vec<ScalarValue>, Vec<Option<String>>>,
) -> Vec<StalePartition> {
    let chosen: Vec<(Vec<ScalarValue>, String)> = if full {
        groups(base, depth)
            .into_iter()
            .map(|(key, files)| (key, fingerprint(files)))
            .collect()
    } else {
        stale
    };
    let mut out: Vec<StalePartition> = chosen
        .into_iter()
        .map(|(key, print)| {
            let values = raw.get(&key).cloned().unwrap_or_default();
            (key, values, print)
        })
        .collect();
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

/// The folder and path of the file each partition of `group` gets in the view's storage at
/// `location` (named by its fingerprint, so a partition and its fingerprint change in one
/// commit).
fn planned_files(
    location: &Location,
    prefix: &[crate::catalog::PartitionColumn],
    group: &[StalePartition],
) -> Vec<(String, Path)> {
    group
        .iter()
        .map(|(_, values, print)| {
            let folder = partition_folder(location, prefix, values);
            let id = uuid::Uuid::new_v4().simple().to_string();
            let path = Path::from(format!("{folder}/part-{print}-{}.parquet", &id[..12]));
            (folder, path)
        })
        .collect()
}

/// What writing one group of a view's partitions needs: the store, the storage schema, and
/// the rows computed for the group.
struct GroupFiles<'a> {
    store: &'a Arc<dyn object_store::ObjectStore>,
    schema: &'a SchemaRef,
    batches: &'a [RecordBatch],
    prefix: &'a [crate::catalog::PartitionColumn],
}

impl GroupFiles<'_> {
    /// Writes each partition's rows at its planned path; returns the files, as the catalog
    /// records them, and the rows written.
    async fn write(
        &self,
        group: &[StalePartition],
        planned: Vec<(String, Path)>,
    ) -> Result<(Vec<crate::catalog::FileEntry>, u64)> {
        let mut files = Vec::with_capacity(group.len());
        let mut written = 0;
        for ((key, values, _), (folder, path)) in group.iter().zip(planned) {
            let rows = rows_of(self.batches, self.prefix, key)?
                .iter()
                .map(|b| conform(b, self.schema))
                .collect::<Result<Vec<_>>>()?;
            written += rows.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            files.push(
                crate::ingest::write_file(
                    self.store,
                    path,
                    values.clone(),
                    folder,
                    self.schema,
                    &rows,
                )
                .await?,
            );
        }
        Ok((files, written))
    }
}
