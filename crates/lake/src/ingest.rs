//! Bulk ingest: a stream of record batches written as Parquet into a table's location and
//! registered in the catalog in one commit (what Flight SQL's `CommandStatementIngest`,
//! ADBC's `adbc_ingest`, asks for).
//!
//! Files are written first, under names no crawl or reader has seen; the catalog commit
//! that lists them is the moment they become visible, so readers see the table before or
//! after the ingest, never a part of it. A failed ingest deletes what it wrote. `replace`
//! swaps the table's file list in the same commit and deletes the old files afterwards.
//!
//! Partitioned tables take rows that carry their partition columns; each row goes to its
//! partition's folder (an existing folder when the partition exists, so `month=01` stays
//! `month=01`), and the partition columns are not written into the files, as in Hive.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, UInt32Array};
use arrow::compute::{cast, take_record_batch};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use futures::{Stream, StreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::catalog::{
    FileEntry, PartitionColumn, PartitionEntry, PartitionType, STATS_VERSION, TableCommit,
    TableEntry, TableFormat,
};
use crate::crawler::footer::{count_written_dictionaries, file_stats};
use crate::crawler::layout::HIVE_NULL;
use crate::crawler::schema::SchemaMerger;
use crate::error::{Error, Result};
use crate::storage::{Location, StoreRegistry};

/// What to do when the table does or does not exist (ADBC's four ingest modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestMode {
    /// Create the table; fail if it exists.
    Create,
    /// Append to the table; fail if it does not exist.
    Append,
    /// Replace the table's rows, creating it if needed.
    Replace,
    /// Append, creating the table if needed.
    CreateAppend,
}

impl IngestMode {
    fn creates(self) -> bool {
        !matches!(self, IngestMode::Append)
    }
}

/// A bulk ingest request.
#[derive(Debug, Clone)]
pub struct IngestRequest {
    pub database: Option<String>,
    pub table: String,
    pub mode: IngestMode,
    /// How a table this ingest creates is laid out (an existing table keeps its own).
    pub layout: NewTableLayout,
}

/// The partition columns and location of a table an ingest creates.
#[derive(Debug, Clone, Default)]
pub struct NewTableLayout {
    /// Columns of the rows that become `key=value` folders (left out of the files).
    pub partition_columns: Vec<PartitionColumn>,
    /// Where its files go; the warehouse when `None`.
    pub location: Option<Location>,
}

/// Rows per Parquet file before the writer starts another one.
const ROWS_PER_FILE: usize = 4_000_000;
/// Partitions one ingest may write to at once (each holds an open writer).
const MAX_OPEN_PARTITIONS: usize = 512;

/// One file being written.
struct OpenFile {
    writer: AsyncArrowWriter<BufWriter>,
    path: Path,
    values: Vec<Option<String>>,
    folder: String,
    rows: usize,
}

/// What an ingest has written so far: finished files, and files still open.
struct Written {
    store: Arc<dyn ObjectStore>,
    done: Vec<FileEntry>,
    open: HashMap<Vec<Option<String>>, OpenFile>,
    started: Vec<Path>,
    /// A file is finished once it holds about this many bytes (or [`ROWS_PER_FILE`] rows).
    file_bytes: u64,
}

impl Written {
    fn new(store: Arc<dyn ObjectStore>, file_bytes: u64) -> Self {
        Self {
            store,
            done: Vec::new(),
            open: HashMap::new(),
            started: Vec::new(),
            file_bytes,
        }
    }

    /// Deletes every file this ingest started (best effort: the files are not in the
    /// catalog, so a leftover is invisible to queries, but it would be found by a crawl).
    async fn abort(self) {
        for path in self.started {
            if let Err(e) = self.store.delete(&path).await
                && !matches!(e, object_store::Error::NotFound { .. })
            {
                tracing::warn!(%path, error = %e, "could not delete a file of a failed ingest");
            }
        }
    }
}

/// Records each file before it is written ([`crate::deferred::record_writes`]), so an ingest
/// cut off before its commit (a killed server, a dropped client) leaves nothing for good.
struct PendingWrites<'a> {
    catalog: &'a crate::catalog::Catalog,
    location: &'a Location,
}

impl PendingWrites<'_> {
    async fn record(&self, path: &Path) -> Result<()> {
        crate::deferred::record_writes(self.catalog, self.location, &[path.to_string()]).await
    }
}

/// Where an ingest writes: the catalog and stores, the database (resolved by the caller),
/// whether it exists, and the location a new table gets in the warehouse.
pub struct Destination<'a> {
    pub catalog: &'a crate::catalog::Catalog,
    pub stores: &'a StoreRegistry,
    pub database: String,
    /// Whether `database` exists (the default database always does).
    pub database_exists: bool,
    /// The warehouse location a new table of this name in `database` would get, or why
    /// there is none (needed only to create the table).
    pub warehouse: Result<Location>,
}

/// Writes `batches` into the table `request` names in `to` and commits them; returns the
/// number of rows ingested. Refreshing what reads the table is the caller's
/// ([`crate::engine::Engine::ingest`]).
///
/// # Errors
/// [`Error::AlreadyExists`] / [`Error::TableNotFound`] when the mode does not allow the
/// table's state; [`Error::InvalidArgument`] when the rows do not fit the table (a column
/// of an incompatible type, a missing partition column); store errors while writing. On
/// any error nothing is committed and the written files are deleted.
pub async fn ingest<S>(to: Destination<'_>, request: &IngestRequest, batches: S) -> Result<u64>
where
    S: Stream<Item = Result<RecordBatch>> + Send,
{
    let database = to.database;
    let name = request.table.as_str();
    if name.is_empty() {
        return Err(Error::InvalidArgument(
            "ingest needs a table name".to_string(),
        ));
    }
    let catalog = to.catalog;
    let existing = catalog.table(&database, name).await?;
    let qualified = format!("{database}.{name}");
    match (&existing, request.mode) {
        (Some(_), IngestMode::Create) => {
            return Err(Error::AlreadyExists(format!(
                "table '{qualified}' already exists; ingest in append or replace mode to add \
                 to it or overwrite it"
            )));
        }
        (None, mode) if !mode.creates() => {
            return Err(Error::TableNotFound { name: qualified });
        }
        _ => {}
    }
    if existing.is_none() && !to.database_exists {
        return Err(Error::InvalidArgument(format!(
            "database '{database}' does not exist; run CREATE DATABASE {database} first"
        )));
    }
    if let Some(t) = &existing
        && t.format != TableFormat::Parquet
    {
        return Err(Error::InvalidArgument(format!(
            "table '{qualified}' is stored as {}; ingest writes Parquet tables only",
            t.format
        )));
    }

    let location = match (&existing, &request.layout.location) {
        (Some(t), _) => Location::parse_catalogued(&t.location)?,
        (None, Some(location)) => location.clone(),
        (None, None) => to.warehouse?,
    };
    let partition_columns: Vec<PartitionColumn> = match &existing {
        Some(t) => t.partition_columns.clone(),
        None => request.layout.partition_columns.clone(),
    };
    let partitions = match &existing {
        Some(t) if !partition_columns.is_empty() => catalog.partitions(t.id).await?,
        _ => Vec::new(),
    };
    let store = to.stores.store_for(&location)?;
    let router = PartitionRouter::new(&location, &partition_columns, &partitions, &qualified)?;

    let ingest_id = uuid::Uuid::new_v4().simple().to_string();
    let mut written = Written::new(Arc::clone(&store), u64::MAX);
    let pending = PendingWrites {
        catalog,
        location: &location,
    };
    let result = write_all(&mut written, &router, Some(&pending), &ingest_id, batches).await;
    let (file_schema, rows) = match result {
        Ok(r) => r,
        Err(e) => {
            written.abort().await;
            return Err(e);
        }
    };

    let removals: Vec<String> = match (&existing, request.mode) {
        (Some(t), IngestMode::Replace) => catalog
            .file_index(t.id)
            .await?
            .into_iter()
            .map(|f| f.path)
            .collect(),
        _ => Vec::new(),
    };
    let appending = matches!(request.mode, IngestMode::Append | IngestMode::CreateAppend);
    let mut table = existing;
    for attempt in 1..=crate::catalog::SCHEMA_ATTEMPTS {
        // The table's schema after the ingest: the rows' schema for a new or replaced
        // table, the table's widened to take the rows in when appending.
        let base = table.as_ref().filter(|_| appending);
        let file_schema = match widened(base, &file_schema, &qualified) {
            Ok(schema) => schema,
            Err(e) => {
                written.abort().await;
                return Err(e);
            }
        };
        let commit = TableCommit {
            database: database.clone(),
            name: name.to_string(),
            location: location.to_string(),
            format: TableFormat::Parquet,
            partition_columns: partition_columns.clone(),
            file_schema,
            base_schema_version: base.map(|t| t.schema_version),
            upserts: written.done.clone(),
            removals: removals.clone(),
            declared: None,
            format_state: None,
            create_only: false,
            one_file_per_partition: false,
            removals_read: false,
            from_listing: false,
            stream_flushed: None,
        };
        let failed = match catalog.commit_table(&commit).await {
            Ok(_) => break,
            // Another writer widened the table meanwhile: widen its new schema.
            Err(crate::catalog::Error::SchemaMoved(_))
                if attempt < crate::catalog::SCHEMA_ATTEMPTS =>
            {
                match catalog.table(&database, name).await {
                    Ok(now) => {
                        table = now;
                        continue;
                    }
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        written.abort().await;
        return Err(failed.into());
    }
    // The old files are deleted after the grace period: a query planned before this
    // commit may still be reading them (crawls leave them out meanwhile).
    crate::deferred::defer(catalog, &location, removals).await;
    tracing::info!(table = %qualified, rows, files = written.done.len(), "ingested");
    Ok(rows)
}

/// Delivers a stream's buffered records (`batches`, in the table's schema as it was when
/// they arrived) into `table`'s files, in one commit that also records `log`'s newest
/// delivered sequence number. The commit is made holding `gate` for writing, and the guard
/// is returned so the caller marks the records delivered before any provider reads the
/// table's files again.
///
/// # Errors
/// Store errors while writing; catalog errors (the table changed shape meanwhile: its
/// schema is re-read and the commit retried first). Nothing is committed then, and the
/// written files are deleted.
pub(crate) async fn deliver<'g>(
    to: Destination<'_>,
    table: &TableEntry,
    batches: Vec<RecordBatch>,
    log: (String, u64),
    gate: &'g tokio::sync::RwLock<()>,
) -> Result<(u64, tokio::sync::RwLockWriteGuard<'g, ()>)> {
    let catalog = to.catalog;
    let qualified = format!("{}.{}", table.database, table.name);
    let location = Location::parse_catalogued(&table.location)?;
    let partitions = match table.partition_columns.is_empty() {
        true => Vec::new(),
        false => catalog.partitions(table.id).await?,
    };
    let store = to.stores.store_for(&location)?;
    let router =
        PartitionRouter::new(&location, &table.partition_columns, &partitions, &qualified)?;
    // Records that arrived before the table was widened take its new columns as NULL.
    let schema = table.table_schema();
    let batches: Vec<Result<RecordBatch>> = batches
        .iter()
        .map(|b| crate::stream::conform(b, &schema, &qualified, false))
        .collect();
    let mut written = Written::new(Arc::clone(&store), u64::MAX);
    let pending = PendingWrites {
        catalog,
        location: &location,
    };
    let id = format!("s{:020}-{}", log.1, uuid::Uuid::new_v4().simple());
    let stream = futures::stream::iter(batches);
    let (file_schema, rows) =
        match write_all(&mut written, &router, Some(&pending), &id, stream).await {
            Ok(r) => r,
            Err(e) => {
                written.abort().await;
                return Err(e);
            }
        };
    let mut current = table.clone();
    for attempt in 1..=crate::catalog::SCHEMA_ATTEMPTS {
        let file_schema = match widened(Some(&current), &file_schema, &qualified) {
            Ok(schema) => schema,
            Err(e) => {
                written.abort().await;
                return Err(e);
            }
        };
        let commit = TableCommit {
            stream_flushed: Some(log.clone()),
            ..files_commit(
                &current,
                &location,
                file_schema,
                written.done.clone(),
                Vec::new(),
            )
        };
        let guard = gate.write().await;
        let failed = match catalog.commit_table(&commit).await {
            Ok(_) => {
                tracing::info!(table = %qualified, rows, files = written.done.len(), lsn = log.1, "stream delivered");
                return Ok((rows, guard));
            }
            Err(crate::catalog::Error::SchemaMoved(_))
                if attempt < crate::catalog::SCHEMA_ATTEMPTS =>
            {
                drop(guard);
                match catalog.table(&current.database, &current.name).await {
                    Ok(Some(now)) if now.id == current.id => {
                        current = now;
                        continue;
                    }
                    Ok(_) => Error::TableNotFound {
                        name: qualified.clone(),
                    },
                    Err(e) => e.into(),
                }
            }
            Err(e) => e.into(),
        };
        written.abort().await;
        return Err(failed);
    }
    written.abort().await;
    Err(Error::Conflict(format!(
        "{qualified}: its schema kept changing while a stream was delivered"
    )))
}

/// The commit of new files `upserts` (and `removals`) into the existing Parquet table `t`,
/// its schema now `file_schema`.
fn files_commit(
    t: &TableEntry,
    location: &Location,
    file_schema: SchemaRef,
    upserts: Vec<FileEntry>,
    removals: Vec<String>,
) -> TableCommit {
    TableCommit {
        database: t.database.clone(),
        name: t.name.clone(),
        location: location.to_string(),
        format: TableFormat::Parquet,
        partition_columns: t.partition_columns.clone(),
        file_schema,
        base_schema_version: Some(t.schema_version),
        upserts,
        removals,
        declared: None,
        format_state: None,
        create_only: false,
        one_file_per_partition: false,
        removals_read: false,
        from_listing: false,
        stream_flushed: None,
    }
}

/// Files of a table to write again: the table as read, the catalogued files the rows come
/// from, and the size of the new files.
pub(crate) struct Rewrite<'a> {
    pub catalog: &'a crate::catalog::Catalog,
    pub stores: &'a StoreRegistry,
    pub table: &'a TableEntry,
    /// The table's partitions (read once by a caller rewriting several).
    pub partitions: &'a [PartitionEntry],
    /// Paths of the catalogued files the rows were read from.
    pub replaced: Vec<String>,
    /// A new file is finished once it holds about this many bytes.
    pub file_bytes: u64,
}

/// Writes `batches` (the rows of `rewrite.replaced`, with the table's columns and its
/// partition columns) into new files in the partitions the rows belong to, and commits them
/// in place of the replaced files in one commit. The commit fails with a conflict, keeping
/// nothing, when another writer removed any replaced file first (so no row is catalogued
/// twice) or changed the table's schema. The replaced files are deleted after the grace
/// period, as a query planned before the swap may still read them. Returns the new files.
///
/// # Errors
/// [`Error::Conflict`] as above; store errors while writing. Nothing is committed then, and
/// the new files are deleted.
pub(crate) async fn rewrite<S>(rewrite: Rewrite<'_>, batches: S) -> Result<Vec<FileEntry>>
where
    S: Stream<Item = Result<RecordBatch>> + Send,
{
    let t = rewrite.table;
    let qualified = format!("{}.{}", t.database, t.name);
    let location = Location::parse_catalogued(&t.location)?;
    let store = rewrite.stores.store_for(&location)?;
    let router = PartitionRouter::new(
        &location,
        &t.partition_columns,
        rewrite.partitions,
        &qualified,
    )?;
    let mut written = Written::new(store, rewrite.file_bytes);
    let pending = PendingWrites {
        catalog: rewrite.catalog,
        location: &location,
    };
    let id = uuid::Uuid::new_v4().simple().to_string();
    if let Err(e) = write_all(&mut written, &router, Some(&pending), &id, batches).await {
        written.abort().await;
        return Err(e);
    }
    let commit = TableCommit {
        removals_read: true,
        ..files_commit(
            t,
            &location,
            Arc::clone(&t.file_schema),
            written.done.clone(),
            rewrite.replaced.clone(),
        )
    };
    if let Err(e) = rewrite.catalog.commit_table(&commit).await {
        written.abort().await;
        return Err(match e {
            crate::catalog::Error::SchemaMoved(m) => Error::Conflict(format!(
                "{qualified}: its schema changed while its files were rewritten ({m}); run \
                 the statement again"
            )),
            e => e.into(),
        });
    }
    crate::deferred::defer(rewrite.catalog, &location, rewrite.replaced).await;
    Ok(written.done)
}

/// The schema a table has after rows of `rows` are added: `table`'s widened to take them
/// in, or the rows' own (a new or replaced table, `table` `None`).
fn widened(table: Option<&TableEntry>, rows: &SchemaRef, qualified: &str) -> Result<SchemaRef> {
    let mut merger = match table {
        Some(t) => SchemaMerger::from_schema(&t.file_schema),
        None => SchemaMerger::default(),
    };
    match merger.add("the ingested rows", rows) {
        Ok(()) => Ok(merger.finish()),
        Err(conflict) => Err(Error::InvalidArgument(format!(
            "cannot append to '{qualified}': column '{}' is {} in the rows but {} in the \
             table; cast it, or ingest in replace mode",
            conflict.column, conflict.file_type, conflict.table_type
        ))),
    }
}

/// Writes `batches` as Parquet files (zstd) under `location`, in `key=value` folders of
/// `partition_columns`, with no catalog entry (`UNLOAD`); returns the rows and the files
/// written. On error the files written so far are deleted.
///
/// # Errors
/// [`Error::InvalidArgument`] when a partition column is missing from the rows; store
/// errors while writing.
pub async fn unload<S>(
    stores: &StoreRegistry,
    location: &Location,
    partition_columns: &[PartitionColumn],
    batches: S,
) -> Result<(u64, usize)>
where
    S: Stream<Item = Result<RecordBatch>> + Send,
{
    let store = stores.store_for(location)?;
    let router = PartitionRouter::new(location, partition_columns, &[], &location.to_string())?;
    let mut written = Written::new(Arc::clone(&store), u64::MAX);
    let id = uuid::Uuid::new_v4().simple().to_string();
    match write_all(&mut written, &router, None, &id, batches).await {
        Ok((_, rows)) => Ok((rows, written.done.len())),
        Err(e) => {
            written.abort().await;
            Err(e)
        }
    }
}

/// Writes every batch; returns the rows' file schema (partition columns removed) and the
/// row count. `pending` records each file before it is written (not for `UNLOAD`, whose
/// files are never catalogued).
async fn write_all<S>(
    written: &mut Written,
    router: &PartitionRouter,
    pending: Option<&PendingWrites<'_>>,
    ingest_id: &str,
    batches: S,
) -> Result<(SchemaRef, u64)>
where
    S: Stream<Item = Result<RecordBatch>> + Send,
{
    let mut batches = std::pin::pin!(batches);
    let mut schema: Option<(SchemaRef, SchemaRef)> = None;
    let mut rows = 0u64;
    let mut file_seq = 0usize;
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        let (input_schema, file_schema) = match &schema {
            Some(s) => s.clone(),
            None => {
                let s = router.file_schema(&batch.schema())?;
                schema = Some(s.clone());
                s
            }
        };
        if batch.schema().fields() != input_schema.fields() {
            return Err(Error::InvalidArgument(
                "every batch of an ingest must have the same schema".into(),
            ));
        }
        rows += batch.num_rows() as u64;
        for (values, folder, part) in router.split(&batch)? {
            if !written.open.contains_key(&values) && written.open.len() >= MAX_OPEN_PARTITIONS {
                return Err(Error::InvalidArgument(format!(
                    "the rows span more than {MAX_OPEN_PARTITIONS} partitions; ingest them in \
                     smaller groups"
                )));
            }
            let open = match written.open.entry(values.clone()) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    file_seq += 1;
                    let path =
                        Path::from(format!("{folder}/part-{ingest_id}-{file_seq:05}.parquet"));
                    if let Some(pending) = pending {
                        pending.record(&path).await?;
                    }
                    written.started.push(path.clone());
                    v.insert(open_file(
                        &written.store,
                        path,
                        values.clone(),
                        folder,
                        &file_schema,
                    )?)
                }
            };
            open.writer
                .write(&part)
                .await
                .map_err(|e| Error::Execution(format!("writing '{}': {e}", open.path)))?;
            open.rows += part.num_rows();
            let bytes = open.writer.bytes_written() + open.writer.in_progress_size();
            if (open.rows >= ROWS_PER_FILE || bytes as u64 >= written.file_bytes)
                && let Some(full) = written.open.remove(&values)
            {
                let entry = finish_file(&written.store, full, &file_schema).await?;
                written.done.push(entry);
            }
        }
    }
    let Some((_, file_schema)) = schema else {
        return Err(Error::InvalidArgument(
            "the ingest carried no schema (no batches were sent)".into(),
        ));
    };
    for (_, open) in std::mem::take(&mut written.open) {
        let entry = finish_file(&written.store, open, &file_schema).await?;
        written.done.push(entry);
    }
    Ok((file_schema, rows))
}

/// Writes `batches` as one zstd Parquet file at `path`, in the partition `folder` with raw
/// partition `values`, and describes it as the catalog records files.
///
/// # Errors
/// Store errors while writing; on error the file may be left behind (the caller deletes).
pub(crate) async fn write_file(
    store: &Arc<dyn ObjectStore>,
    path: Path,
    values: Vec<Option<String>>,
    folder: String,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<FileEntry> {
    let mut open = open_file(store, path, values, folder, schema)?;
    for batch in batches {
        open.writer
            .write(batch)
            .await
            .map_err(|e| Error::Execution(format!("writing '{}': {e}", open.path)))?;
    }
    finish_file(store, open, schema).await
}

fn open_file(
    store: &Arc<dyn ObjectStore>,
    path: Path,
    values: Vec<Option<String>>,
    folder: String,
    schema: &SchemaRef,
) -> Result<OpenFile> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let sink = BufWriter::new(Arc::clone(store), path.clone());
    let writer = AsyncArrowWriter::try_new(sink, Arc::clone(schema), Some(props))
        .map_err(|e| Error::Execution(format!("writing '{path}': {e}")))?;
    Ok(OpenFile {
        writer,
        path,
        values,
        folder,
        rows: 0,
    })
}

/// Closes a file and describes it as the catalog records files.
async fn finish_file(
    store: &Arc<dyn ObjectStore>,
    open: OpenFile,
    schema: &SchemaRef,
) -> Result<FileEntry> {
    let metadata = open
        .writer
        .close()
        .await
        .map_err(|e| Error::Execution(format!("finishing '{}': {e}", open.path)))?;
    let head = store
        .head(&open.path)
        .await
        .map_err(|e| Error::store(open.path.to_string(), e))?;
    let mut stats = file_stats(&metadata, schema);
    count_written_dictionaries(store.as_ref(), &open.path, &metadata, schema, &mut stats).await;
    let entry = FileEntry {
        path: open.path.to_string(),
        size: head.size,
        e_tag: head.e_tag,
        last_modified: head.last_modified,
        row_count: metadata.file_metadata().num_rows().max(0) as u64,
        footer_size: None,
        file_schema: Arc::clone(schema),
        stats,
        stats_version: STATS_VERSION,
        partition_values: open.values,
        partition_location: open.folder,
    };
    Ok(entry)
}

/// Partition values in the table's partition column order (`None` is NULL).
type PartitionKey = Vec<Option<String>>;

/// Sends each row to its partition folder.
struct PartitionRouter {
    root: String,
    columns: Vec<PartitionColumn>,
    /// Existing partitions by their normalised values: raw values and folder.
    existing: HashMap<PartitionKey, (PartitionKey, String)>,
    /// Zero-padding width of integer partition folders (`month=01`), per column.
    widths: Vec<usize>,
    table: String,
}

impl PartitionRouter {
    fn new(
        location: &Location,
        columns: &[PartitionColumn],
        partitions: &[PartitionEntry],
        table: &str,
    ) -> Result<Self> {
        let root = location.prefix().to_string();
        let mut existing = HashMap::new();
        let mut widths = vec![0usize; columns.len()];
        for p in partitions {
            let named = columns
                .iter()
                .all(|c| p.location.contains(&format!("{}=", c.name)));
            if !named {
                return Err(Error::InvalidArgument(format!(
                    "table '{table}' has partition folders that are not key=value (such as \
                     '{}'); ingest writes only key=value partitions",
                    p.location
                )));
            }
            let key: Vec<Option<String>> = p
                .values
                .iter()
                .zip(columns)
                .map(|(v, c)| normalise(v.as_deref(), c.data_type))
                .collect();
            for (i, v) in p.values.iter().enumerate() {
                if let Some(v) = v
                    && columns[i].data_type == PartitionType::Int64
                    && v.len() > 1
                    && v.starts_with('0')
                {
                    widths[i] = widths[i].max(v.len());
                }
            }
            existing.insert(key, (p.values.clone(), p.location.clone()));
        }
        Ok(Self {
            root,
            columns: columns.to_vec(),
            existing,
            widths,
            table: table.to_string(),
        })
    }

    /// The schema the files get: the rows' schema without the partition columns (which
    /// must all be present).
    fn file_schema(&self, input: &SchemaRef) -> Result<(SchemaRef, SchemaRef)> {
        for c in &self.columns {
            if input.field_with_name(&c.name).is_err() {
                return Err(Error::InvalidArgument(format!(
                    "table '{}' is partitioned by {}; the rows have no column '{}'",
                    self.table,
                    self.columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    c.name
                )));
            }
        }
        let fields: Vec<_> = input
            .fields()
            .iter()
            .filter(|f| !self.columns.iter().any(|c| &c.name == f.name()))
            .map(|f| {
                // Files hold plain types: views and dictionaries are a reader's concern.
                let t = match f.data_type() {
                    DataType::Utf8View => DataType::Utf8,
                    DataType::BinaryView => DataType::Binary,
                    DataType::Dictionary(_, v) => v.as_ref().clone(),
                    t => t.clone(),
                };
                f.as_ref().clone().with_data_type(t)
            })
            .collect();
        if fields.is_empty() {
            return Err(Error::InvalidArgument(
                "the rows have no columns besides the partition columns".into(),
            ));
        }
        Ok((Arc::clone(input), Arc::new(Schema::new(fields))))
    }

    /// Splits a batch into (raw partition values, folder, rows without partition columns).
    fn split(&self, batch: &RecordBatch) -> Result<Vec<(PartitionKey, String, RecordBatch)>> {
        let file_cols: Vec<usize> = batch
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| !self.columns.iter().any(|c| &c.name == f.name()))
            .map(|(i, _)| i)
            .collect();
        let project = |b: &RecordBatch| -> Result<RecordBatch> {
            let b = b.project(&file_cols)?;
            let columns = b
                .columns()
                .iter()
                .map(|a| match a.data_type() {
                    DataType::Utf8View => cast(a, &DataType::Utf8),
                    DataType::BinaryView => cast(a, &DataType::Binary),
                    DataType::Dictionary(_, v) => cast(a, v),
                    _ => Ok(Arc::clone(a)),
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let fields: Vec<_> = b
                .schema()
                .fields()
                .iter()
                .zip(&columns)
                .map(|(f, a)| f.as_ref().clone().with_data_type(a.data_type().clone()))
                .collect();
            Ok(RecordBatch::try_new(
                Arc::new(Schema::new(fields)),
                columns,
            )?)
        };
        if self.columns.is_empty() {
            return Ok(vec![(Vec::new(), self.root.clone(), project(batch)?)]);
        }
        let value_columns = self
            .columns
            .iter()
            .map(|c| {
                let array = batch.column_by_name(&c.name).ok_or_else(|| {
                    Error::Internal(format!("partition column '{}' vanished", c.name))
                })?;
                Ok(cast(array, &DataType::Utf8)?)
            })
            .collect::<Result<Vec<_>>>()?;
        let strings: Vec<&arrow::array::StringArray> = value_columns
            .iter()
            .map(|a| {
                a.as_any()
                    .downcast_ref::<arrow::array::StringArray>()
                    .ok_or_else(|| Error::Internal("cast to Utf8 gave another type".into()))
            })
            .collect::<Result<_>>()?;
        let mut groups: HashMap<Vec<Option<String>>, Vec<u32>> = HashMap::new();
        let mut order: Vec<Vec<Option<String>>> = Vec::new();
        for row in 0..batch.num_rows() {
            let key: Vec<Option<String>> = strings
                .iter()
                .zip(&self.columns)
                .map(|(a, c)| normalise((!a.is_null(row)).then(|| a.value(row)), c.data_type))
                .collect();
            let rows = groups.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                Vec::new()
            });
            rows.push(row as u32);
        }
        let mut out = Vec::with_capacity(order.len());
        for key in order {
            let indices = UInt32Array::from(groups.remove(&key).unwrap_or_default());
            let part = take_record_batch(batch, &indices)?;
            let (raw, folder) = match self.existing.get(&key) {
                Some((raw, folder)) => (raw.clone(), folder.clone()),
                None => self.new_partition(&key),
            };
            out.push((raw, folder, project(&part)?));
        }
        Ok(out)
    }

    /// Raw values and folder of a partition the table does not have yet.
    fn new_partition(&self, key: &[Option<String>]) -> (Vec<Option<String>>, String) {
        let raw: Vec<Option<String>> = key
            .iter()
            .zip(&self.widths)
            .map(|(v, &width)| {
                v.as_ref().map(|v| match v.parse::<i64>() {
                    Ok(n) if width > 0 && n >= 0 => format!("{n:0width$}"),
                    _ => v.clone(),
                })
            })
            .collect();
        let mut folder = self.root.clone();
        for (c, v) in self.columns.iter().zip(&raw) {
            let value = match v {
                Some(v) => percent_encoding::utf8_percent_encode(v, HIVE_ESCAPE).to_string(),
                None => HIVE_NULL.to_string(),
            };
            if !folder.is_empty() {
                folder.push('/');
            }
            folder.push_str(&format!("{}={value}", c.name));
        }
        (raw, folder)
    }
}

/// Characters Hive escapes in partition folder names.
const HIVE_ESCAPE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b'/')
    .add(b'=')
    .add(b'%')
    .add(b'"')
    .add(b'#')
    .add(b'?')
    .add(b'\\')
    .add(b':')
    .add(b'*')
    .add(b'<')
    .add(b'>')
    .add(b'|')
    .add(b'{')
    .add(b'[');

/// A partition value in the form equal values share (`01` and `1` are one integer).
fn normalise(value: Option<&str>, data_type: PartitionType) -> Option<String> {
    let v = value?;
    Some(match data_type {
        PartitionType::Int64 => v
            .trim()
            .parse::<i64>()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| v.to_string()),
        // Hive writes `2024-01-05 13:00:00`, Arrow's cast `2024-01-05T13:00:00`.
        PartitionType::Timestamp => v.replacen('T', " ", 1),
        _ => v.to_string(),
    })
}
