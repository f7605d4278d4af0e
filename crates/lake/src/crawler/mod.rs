//! The crawler: list a prefix, find its tables and partitions, read the footers of new or
//! changed Parquet files, merge schemas, and commit each table to the catalog.
//!
//! - [`layout`]: which objects are data, where tables start, partition keys and types.
//! - [`schema`]: merging file schemas by column name, with widening.
//! - [`footer`]: range reads of Parquet footers (schema, row count, statistics).
//! - [`jobs`]: crawlers as catalog objects, their cron schedules and the scheduler.
//!
//! A crawl lists once and reads only what changed: a file whose size and ETag (or
//! modification time) match the catalog is not opened. Problems (a corrupt file, a schema
//! conflict, a file that vanished mid-crawl) are collected in the [`CrawlSummary`] with the
//! file's path; the crawl goes on without that file.

pub mod events;
mod files;
pub mod footer;
pub mod jobs;
pub mod layout;
pub mod listing;
pub mod schema;
pub mod text;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::{Schema, SchemaRef};
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore};
use serde::Serialize;

use crate::catalog::{
    Catalog, FileEntry, PartitionColumn, PartitionType, STATS_VERSION, TableCommit, TableFormat,
};
// The crawl policies are stored settings of crawlers, so the catalog defines them.
pub use crate::catalog::{Declared, DeletionPolicy, PinnedPartition, SchemaChangePolicy};
use crate::delta::At;
use crate::error::{Error, Result};
use crate::storage::{Location, StoreRegistry};
use footer::{FooterError, read_footer};
use layout::{
    ForeignFormat, Grouping, Skip, classify, foreign_table_roots, group_tables,
    infer_partition_type, is_under, place_file, table_name_from,
};
use schema::SchemaMerger;
use text::FileFormat;

/// Default number of records of a CSV or JSON file its columns are inferred from.
pub const DEFAULT_SAMPLE_ROWS: usize = 1000;

/// Default number of footer reads in flight at once.
pub const DEFAULT_FOOTER_CONCURRENCY: usize = 32;

/// What a crawl is asked to do: how the location is crawled (`shape`, the options a
/// crawler keeps and `tarn crawl`'s flags and the admin API give), and what only this run
/// needs.
#[derive(Debug, Clone)]
pub struct CrawlOptions {
    /// Database the tables are registered in.
    pub database: String,
    /// How the location is crawled: one table or discovered tables, globs, partition
    /// types, the schema change and deletion policies, the sample size, the table level.
    pub shape: crate::catalog::CrawlerOptions,
    /// Footer reads in flight at once (bounded so a large lake does not open thousands of
    /// requests against the store).
    pub footer_concurrency: usize,
    /// Declared table layout from `CREATE EXTERNAL TABLE` (columns, partition keys and
    /// types); `shape`'s partition types join it. What is not declared is inferred.
    pub declared: Declared,
    /// Put before a file's path (relative to the crawled location) when the globs are
    /// matched: event mode crawls a table under the crawler's location, whose globs are
    /// relative to that location.
    pub glob_prefix: String,
    /// The crawler this crawl runs for, recorded with the crawl.
    pub crawler: Option<String>,
    /// Event mode, with `table`: list and crawl only these folders of the table (relative
    /// to its location); its files elsewhere stay as catalogued. Empty: the whole table.
    pub within: Vec<String>,
    /// The named table must not exist yet (`CREATE EXTERNAL TABLE`): if another statement
    /// creates it while this crawl runs, this crawl's commit fails and changes nothing.
    pub create_only: bool,
}

impl CrawlOptions {
    /// A crawl into `database` shaped by `shape`, with this run's settings at their
    /// defaults.
    pub fn new(database: &str, shape: crate::catalog::CrawlerOptions) -> Self {
        Self {
            database: database.to_string(),
            shape,
            ..Self::default()
        }
    }

    /// A crawl of the one table `name` in `database`.
    pub fn table(database: &str, name: &str) -> Self {
        Self::new(
            database,
            crate::catalog::CrawlerOptions {
                table: Some(name.to_string()),
                ..Default::default()
            },
        )
    }

    /// CSV and JSON files: how many records of each new file's start its columns are
    /// inferred from.
    pub fn sample_rows(&self) -> usize {
        self.shape.sample_rows.unwrap_or(DEFAULT_SAMPLE_ROWS).max(1)
    }

    /// The declared layout with the shape's partition types.
    fn declared(&self) -> Declared {
        let mut declared = self.declared.clone();
        declared
            .partition_types
            .extend(self.shape.partition_types.clone());
        declared
    }
}

/// How a table's columns differ, for messages: added, dropped and retyped columns.
fn describe_schema_change(old: &Schema, new: &Schema) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(order) = reordered(old, new) {
        parts.push(order);
    }
    for f in new.fields() {
        match old.field_with_name(f.name()) {
            Err(_) => parts.push(format!("new column {} {}", f.name(), f.data_type())),
            Ok(o) if o.data_type() != f.data_type() => parts.push(format!(
                "column {} {} -> {}",
                f.name(),
                o.data_type(),
                f.data_type()
            )),
            Ok(_) => {}
        }
    }
    for f in old.fields() {
        if new.field_with_name(f.name()).is_err() {
            parts.push(format!("column {} dropped", f.name()));
        }
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The columns both schemas have, when they come in another order (which matters only
/// to files read by position, CSV).
fn reordered(old: &Schema, new: &Schema) -> Option<String> {
    let common = |a: &Schema, b: &Schema| -> Vec<String> {
        a.fields()
            .iter()
            .filter(|f| b.field_with_name(f.name()).is_ok())
            .map(|f| f.name().clone())
            .collect()
    };
    let (before, after) = (common(old, new), common(new, old));
    (before != after).then(|| {
        format!(
            "columns reordered ({} -> {})",
            before.join(", "),
            after.join(", ")
        )
    })
}

/// Compiles glob patterns (`*` stays within a folder, `**` crosses folders).
fn glob_set(patterns: &[String]) -> Result<globset::GlobSet> {
    let mut builder = globset::GlobSetBuilder::new();
    for p in patterns {
        let glob = globset::GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::InvalidArgument(format!("bad glob pattern '{p}': {e}")))?;
        builder.add(glob);
    }
    builder
        .build()
        .map_err(|e| Error::InvalidArgument(format!("bad glob patterns: {e}")))
}

impl Default for CrawlOptions {
    fn default() -> Self {
        Self {
            database: "default".into(),
            shape: crate::catalog::CrawlerOptions::default(),
            footer_concurrency: DEFAULT_FOOTER_CONCURRENCY,
            declared: Declared::default(),
            glob_prefix: String::new(),
            crawler: None,
            create_only: false,
            within: Vec::new(),
        }
    }
}

/// A file the crawl could not use, and why.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

/// Counts of listed objects that are not data.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Skipped {
    pub hidden: u64,
    pub in_progress: u64,
    pub empty: u64,
    pub not_parquet: u64,
    /// Files of Delta or Iceberg tables.
    pub other_format: u64,
    /// Files left out by `--include` / `--exclude`.
    pub excluded: u64,
    /// Files Tarn replaced (a view's refresh, an overwrite) and deletes after a grace
    /// period: left out so a crawl does not bring them back.
    #[serde(default)]
    pub replaced: u64,
}

/// The objects under `location` (`prefix` in `store`): all of them, or in event mode
/// only those in the folders `within` names.
async fn list_objects(
    store: &Arc<dyn ObjectStore>,
    location: &Location,
    prefix: &object_store::path::Path,
    within: &[String],
) -> Result<Vec<ObjectMeta>> {
    Ok(if within.is_empty() {
        listing::list_all(store.as_ref(), prefix)
            .await
            .map_err(|e| Error::store(location.to_string(), e))?
    } else {
        let mut listed = Vec::new();
        for folder in within {
            // The folder as the store names it: event keys are object keys already, so
            // parsed, not encoded again (`%3A` in a Hive value must stay `%3A`).
            let raw = if prefix.as_ref().is_empty() {
                folder.clone()
            } else {
                format!("{}/{folder}", prefix.as_ref())
            };
            let sub = object_store::path::Path::parse(&raw).map_err(|e| {
                Error::InvalidArgument(format!(
                    "an event names the folder {location}{folder}/, which is not a valid \
                     object path: {e}"
                ))
            })?;
            let more: Vec<ObjectMeta> = store
                .list(Some(&sub))
                .try_collect()
                .await
                .map_err(|e| Error::store(format!("{location}{folder}/"), e))?;
            listed.extend(more);
        }
        listed
    })
}

/// `listed` without the files waiting for deletion after a replacement (counted as
/// skipped).
fn without_replaced(
    listed: Vec<ObjectMeta>,
    pending: &std::collections::HashSet<(String, String)>,
    store_url: &str,
    summary: &mut CrawlSummary,
) -> Vec<ObjectMeta> {
    if pending.is_empty() {
        return listed;
    }
    let before = listed.len();
    let kept: Vec<ObjectMeta> = listed
        .into_iter()
        .filter(|m| !pending.contains(&(store_url.to_string(), m.location.to_string())))
        .collect();
    summary.skipped.replaced += (before - kept.len()) as u64;
    kept
}

/// What a crawl did.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct CrawlSummary {
    /// The crawl's record in the crawl history (not part of the recorded summary).
    #[serde(skip)]
    pub crawl_id: Option<i64>,
    /// When the crawl began listing the location (not part of the recorded summary): a
    /// catalogued file last modified after it cannot be in the listing, as another writer
    /// committed it while the crawl ran, so it is not taken for removed.
    #[serde(skip)]
    pub listed_at: Option<chrono::DateTime<chrono::Utc>>,
    pub location: String,
    pub database: String,
    pub tables_created: Vec<String>,
    pub tables_updated: Vec<String>,
    pub tables_unchanged: Vec<String>,
    /// Tables whose folders are gone, marked deprecated (`--deletion mark`).
    #[serde(default)]
    pub tables_deprecated: Vec<String>,
    /// Tables whose folders are gone, dropped from the catalog (`--deletion delete`).
    #[serde(default)]
    pub tables_deleted: Vec<String>,
    pub schema_versions_added: u64,
    pub partitions_added: u64,
    pub partitions_removed: u64,
    pub files_listed: u64,
    pub files_added: u64,
    pub files_changed: u64,
    pub files_removed: u64,
    pub files_unchanged: u64,
    /// Unchanged Parquet files whose footers were read again because an older build
    /// recorded their statistics (see `catalog::STATS_VERSION`).
    #[serde(default)]
    pub files_restated: u64,
    pub bytes_added: u64,
    pub footers_read: u64,
    /// CSV and JSON files whose start was read to infer their columns.
    #[serde(default)]
    pub samples_read: u64,
    /// Event mode: S3 event notifications taken from the queue.
    #[serde(default)]
    pub events_read: u64,
    /// Event mode: notifications left in the queue for the next run, because a file in
    /// the folder they name could not be read this time.
    #[serde(default)]
    pub events_kept: u64,
    /// Files whose read failed in a way that may pass later (the store refused or could
    /// not be reached): left out this time, read again by the next crawl.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry: Vec<String>,
    pub skipped: Skipped,
    pub problems: Vec<Problem>,
    pub elapsed_ms: u64,
    /// Time spent listing the location.
    pub list_ms: u64,
    /// Wall time spent reading footers.
    pub footer_ms: u64,
    /// Time spent committing tables to the catalog.
    #[serde(default)]
    pub commit_ms: u64,
}

impl CrawlSummary {
    /// Adds what another crawl (of a table under this location) did.
    fn absorb(&mut self, other: CrawlSummary) {
        self.tables_created.extend(other.tables_created);
        self.tables_updated.extend(other.tables_updated);
        self.tables_unchanged.extend(other.tables_unchanged);
        self.tables_deprecated.extend(other.tables_deprecated);
        self.tables_deleted.extend(other.tables_deleted);
        self.problems.extend(other.problems);
        self.retry.extend(other.retry);
        for (mine, theirs) in [
            (&mut self.schema_versions_added, other.schema_versions_added),
            (&mut self.partitions_added, other.partitions_added),
            (&mut self.partitions_removed, other.partitions_removed),
            (&mut self.files_listed, other.files_listed),
            (&mut self.files_added, other.files_added),
            (&mut self.files_changed, other.files_changed),
            (&mut self.files_removed, other.files_removed),
            (&mut self.files_unchanged, other.files_unchanged),
            (&mut self.files_restated, other.files_restated),
            (&mut self.bytes_added, other.bytes_added),
            (&mut self.footers_read, other.footers_read),
            (&mut self.samples_read, other.samples_read),
            (&mut self.elapsed_ms, other.elapsed_ms),
            (&mut self.list_ms, other.list_ms),
            (&mut self.footer_ms, other.footer_ms),
            (&mut self.commit_ms, other.commit_ms),
            (&mut self.skipped.hidden, other.skipped.hidden),
            (&mut self.skipped.in_progress, other.skipped.in_progress),
            (&mut self.skipped.empty, other.skipped.empty),
            (&mut self.skipped.not_parquet, other.skipped.not_parquet),
            (&mut self.skipped.other_format, other.skipped.other_format),
            (&mut self.skipped.excluded, other.skipped.excluded),
            (&mut self.skipped.replaced, other.skipped.replaced),
        ] {
            *mine += theirs;
        }
    }
}

impl std::fmt::Display for CrawlSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "Crawled {} into database '{}' in {:.2}s (listing {:.2}s, footers {:.2}s, \
             catalog {:.2}s)",
            self.location,
            self.database,
            self.elapsed_ms as f64 / 1000.0,
            self.list_ms as f64 / 1000.0,
            self.footer_ms as f64 / 1000.0,
            self.commit_ms as f64 / 1000.0
        )?;
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(", ")
            }
        };
        writeln!(f, "  tables created:   {}", list(&self.tables_created))?;
        writeln!(f, "  tables updated:   {}", list(&self.tables_updated))?;
        writeln!(f, "  tables unchanged: {}", list(&self.tables_unchanged))?;
        if !self.tables_deprecated.is_empty() || !self.tables_deleted.is_empty() {
            writeln!(
                f,
                "  folders gone:     deprecated {}; deleted {}",
                list(&self.tables_deprecated),
                list(&self.tables_deleted)
            )?;
        }
        let restated = if self.files_restated > 0 {
            format!(", {} read again for newer statistics", self.files_restated)
        } else {
            String::new()
        };
        writeln!(
            f,
            "  partitions: +{} -{}   files: +{} ~{} -{} ({} unchanged{restated})   bytes added: {}",
            self.partitions_added,
            self.partitions_removed,
            self.files_added,
            self.files_changed,
            self.files_removed,
            self.files_unchanged,
            self.bytes_added
        )?;
        writeln!(
            f,
            "  listed {} objects, read {} footers and {} CSV/JSON samples; skipped {} \
             hidden/marker, {} in progress, {} empty, {} not data",
            self.files_listed,
            self.footers_read,
            self.samples_read,
            self.skipped.hidden,
            self.skipped.in_progress,
            self.skipped.empty,
            self.skipped.not_parquet
        )?;
        if self.events_read > 0 {
            writeln!(f, "  events: {} S3 notifications read", self.events_read)?;
            if self.events_kept > 0 {
                writeln!(
                    f,
                    "  events: {} kept in the queue for the next run (files to read again)",
                    self.events_kept
                )?;
            }
        }
        if self.problems.is_empty() {
            write!(f, "  problems: none")
        } else {
            write!(f, "  problems ({}):", self.problems.len())?;
            for p in &self.problems {
                write!(f, "\n    {}: {}", p.path, p.message)?;
            }
            Ok(())
        }
    }
}

/// Crawls locations into a catalog.
#[derive(Debug, Clone)]
pub struct Crawler {
    catalog: Catalog,
    stores: Arc<StoreRegistry>,
    progress: Option<ProgressReporter>,
}

/// How far a crawl has got, for progress displays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Objects listed so far.
    pub files_listed: u64,
    /// Footers the crawl has decided to read so far.
    pub footers_to_read: u64,
    /// Footers read so far.
    pub footers_read: u64,
    /// Bytes of the files whose footers were read.
    pub bytes: u64,
}

/// Receives [`Progress`] as a crawl advances.
#[derive(Clone)]
pub struct ProgressReporter {
    state: Arc<std::sync::Mutex<Progress>>,
    report: Arc<dyn Fn(&Progress) + Send + Sync>,
}

impl std::fmt::Debug for ProgressReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressReporter")
    }
}

impl ProgressReporter {
    fn update(&self, change: impl FnOnce(&mut Progress)) {
        if let Ok(mut state) = self.state.lock() {
            change(&mut state);
            (self.report)(&state);
        }
    }
}

/// A listed candidate data file, with its path relative to the crawl root.
struct Candidate {
    meta: ObjectMeta,
    relative: String,
}

impl Crawler {
    pub fn new(catalog: Catalog, stores: Arc<StoreRegistry>) -> Self {
        Self {
            catalog,
            stores,
            progress: None,
        }
    }

    /// Calls `report` whenever the crawl advances (listing done, each footer read).
    pub fn with_progress(mut self, report: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(ProgressReporter {
            state: Arc::default(),
            report: Arc::new(report),
        });
        self
    }

    fn report(&self, change: impl FnOnce(&mut Progress)) {
        if let Some(p) = &self.progress {
            p.update(change);
        }
    }

    /// Crawls `location` (a path or URL) and commits what it finds, one table per
    /// transaction. The crawl itself is recorded in the catalog with its summary.
    ///
    /// # Errors
    /// A bad location, a listing failure (e.g. a missing bucket) or a catalog failure.
    /// Problems with single files are not errors: they are in the summary.
    pub async fn crawl(&self, location: &str, options: &CrawlOptions) -> Result<CrawlSummary> {
        let location = Location::parse(location)?;
        let crawl_id = self
            .catalog
            .begin_crawl(
                location.url.as_str(),
                &options.database,
                options.crawler.as_deref(),
            )
            .await?;
        let mut result = self.crawl_inner(&location, options).await;
        if let Ok(summary) = &mut result {
            summary.crawl_id = Some(crawl_id);
        }
        let (status, summary_json) = match &result {
            Ok(summary) => (
                "succeeded",
                serde_json::to_string(summary).unwrap_or_default(),
            ),
            Err(e) => (
                "failed",
                serde_json::json!({ "error": e.to_string() }).to_string(),
            ),
        };
        self.catalog
            .finish_crawl(crawl_id, status, &summary_json)
            .await?;
        result
    }

    /// Event mode: takes the S3 event notifications waiting in `queue` and re-crawls only
    /// the tables under `location` whose objects they name (the whole location when one
    /// names an object outside every catalogued table, which may be a new table, or when
    /// `full`: a crawler's first run). The
    /// messages are deleted once the crawls are committed; a failed crawl leaves them for
    /// the next run. An empty queue lists nothing.
    ///
    /// # Errors
    /// As [`Crawler::crawl`], plus an unreachable or refusing queue.
    pub async fn crawl_events(
        &self,
        location: &str,
        options: &CrawlOptions,
        queue: &events::Queue,
        full: bool,
    ) -> Result<CrawlSummary> {
        let root = Location::parse(location)?;
        let messages = queue.receive(10_000).await?;
        let bucket = root.url.host_str().unwrap_or_default().to_string();
        let prefix = root.prefix();
        // location -> (name, the folders its events name; `None`: the whole table)
        let mut tables: BTreeMap<String, (String, Option<BTreeSet<String>>)> = BTreeMap::new();
        // The first run crawls everything, which covers the events waiting before it.
        let mut whole_location = full;
        let (catalogued, pinned) = if messages.is_empty() || full {
            (Vec::new(), Vec::new())
        } else {
            (
                self.catalog.tables().await?,
                self.pinned_outside(&options.database).await?,
            )
        };
        for (b, key) in messages.iter().flat_map(|m| m.objects.iter()) {
            if *b != bucket || !is_under(key, prefix.as_ref()) {
                continue;
            }
            // Markers and files in progress (Spark's `_SUCCESS` at a table's top) change
            // nothing a crawl keeps, so they do not widen it; a Delta log does.
            let relative = key
                .strip_prefix(prefix.as_ref())
                .unwrap_or(key)
                .trim_start_matches('/');
            if matches!(classify(relative, 1), Some(Skip::Hidden | Skip::InProgress))
                && !relative.split('/').any(|s| s == "_delta_log")
            {
                continue;
            }
            let url = format!("{}{}", root.store_url().as_str(), key);
            // The innermost table holding the object (a table may sit in another's folder).
            match catalogued
                .iter()
                .filter(|t| t.database == options.database && url.starts_with(t.location.as_str()))
                .max_by_key(|t| t.location.len())
            {
                Some(t) => {
                    // The folder of the object inside the table: a partition, usually.
                    let folder = url[t.location.len()..]
                        .rsplit_once('/')
                        .map(|(folder, _)| folder.to_string())
                        .filter(|f| !f.is_empty() && t.format != TableFormat::Delta);
                    let entry = tables
                        .entry(t.location.clone())
                        .or_insert_with(|| (t.name.clone(), Some(BTreeSet::new())));
                    match folder {
                        Some(f) => {
                            if let Some(folders) = &mut entry.1 {
                                folders.insert(f);
                            }
                        }
                        None => entry.1 = None,
                    }
                }
                None => match pinned.iter().find(|(table_location, pin)| {
                    table_location.starts_with(root.store_url().as_str()) && is_under(key, pin)
                }) {
                    // In a table's partition folder outside its own: that whole table.
                    Some((table_location, _)) => {
                        if let Some(t) = catalogued.iter().find(|t| &t.location == table_location) {
                            tables.insert(t.location.clone(), (t.name.clone(), None));
                        }
                    }
                    None => whole_location = true,
                },
            }
        }
        let mut summary = CrawlSummary {
            location: root.to_string(),
            database: options.database.clone(),
            ..CrawlSummary::default()
        };
        if whole_location {
            summary = self.crawl(location, options).await?;
        } else {
            for (table_location, (name, folders)) in &tables {
                // Only the folders the events name are listed (a folder inside another
                // is listed with it); a Delta table, or an object at a table's top, takes
                // the whole table.
                let mut within: Vec<String> = Vec::new();
                for folder in folders.iter().flatten() {
                    if !within.iter().any(|w| is_under(folder, w)) {
                        within.push(folder.clone());
                    }
                }
                // The crawler's globs are relative to its location: matched here with the
                // table's folder in front. A table above the location was catalogued by
                // another crawl, so the globs are not this one's to apply.
                // (The table holds the event's object, which is under the location: the
                // table is either under the location or above it.)
                let glob_prefix = table_location
                    .strip_prefix(root.store_url().as_str())
                    .and_then(|rest| rest.strip_prefix(prefix.as_ref()))
                    .map(|rest| rest.trim_matches('/').to_string());
                let (include, exclude) = match glob_prefix {
                    Some(_) => (options.shape.include.clone(), options.shape.exclude.clone()),
                    None => (Vec::new(), Vec::new()),
                };
                let one = CrawlOptions {
                    shape: crate::catalog::CrawlerOptions {
                        table: Some(name.clone()),
                        include,
                        exclude,
                        ..options.shape.clone()
                    },
                    glob_prefix: glob_prefix.unwrap_or_default(),
                    within,
                    ..options.clone()
                };
                summary.absorb(self.crawl(table_location, &one).await?);
            }
        }
        // A message naming a folder with a file that could not be read stays in the
        // queue, visible again at once, so the next run reads that folder again.
        let (kept, handled): (Vec<events::Message>, Vec<events::Message>) =
            messages.into_iter().partition(|m| {
                m.objects.iter().any(|(b, key)| {
                    let folder = key.rsplit_once('/').map_or("", |(folder, _)| folder);
                    *b == bucket && summary.retry.iter().any(|p| is_under(p, folder))
                })
            });
        queue.delete(&handled).await?;
        queue.release(&kept).await?;
        summary.events_read = (handled.len() + kept.len()) as u64;
        summary.events_kept = kept.len() as u64;
        Ok(summary)
    }

    /// Tables crawled from under `location` before whose folders are now gone (nothing of
    /// `listed_relatives` under them, not crawled now as one of `seen_locations`): kept
    /// through their pinned partition folders, deleted or marked deprecated as
    /// `options.shape.deletion` says.
    async fn gone_tables(
        &self,
        store: &Arc<dyn ObjectStore>,
        location: &Location,
        options: &CrawlOptions,
        listed_relatives: &[String],
        seen_locations: &BTreeSet<String>,
        summary: &mut CrawlSummary,
    ) -> Result<()> {
        // Tables crawled from under this location before whose folders are now gone. A
        // folder that still holds objects is not gone: it may be a table declared inside
        // another table's tree (`CREATE EXTERNAL TABLE … LOCATION '…/year=2024/'`).
        for table in self.catalog.tables().await? {
            let Some(table_relative) = table.location.strip_prefix(location.url.as_str()) else {
                continue;
            };
            let table_relative = table_relative.trim_end_matches('/');
            let still_there = listed_relatives.iter().any(|r| is_under(r, table_relative));
            let gone = table.database == options.database
                && !seen_locations.contains(&table.location)
                && options.shape.table.is_none()
                && !still_there
                && crate::catalog::TableKind::of(&table.name)
                    != crate::catalog::TableKind::RollupStorage;
            // Partitions at folders of the user's choosing keep a table whose own folder
            // is empty; its files are those folders' now.
            if gone
                && !self
                    .catalog
                    .table_properties(table.id)
                    .await?
                    .pinned_partitions
                    .is_empty()
            {
                let table_path = Location::parse_catalogued(&table.location)?.prefix();
                Box::pin(self.crawl_table(
                    store,
                    options,
                    &table.name,
                    &table.location,
                    table_path.as_ref(),
                    &[],
                    summary,
                ))
                .await?;
                continue;
            }
            if !gone
                || (options.shape.deletion == DeletionPolicy::Mark
                    && self
                        .catalog
                        .table_properties(table.id)
                        .await?
                        .deprecated
                        .is_some())
            {
                continue;
            }
            let qualified = format!("{}.{}", table.database, table.name);
            match options.shape.deletion {
                DeletionPolicy::Delete => {
                    if self
                        .catalog
                        .drop_table(&table.database, &table.name)
                        .await?
                    {
                        summary.tables_deleted.push(qualified);
                    }
                }
                DeletionPolicy::Mark => {
                    if table.format != TableFormat::Delta {
                        // Its files are gone: forget them, keep the definition.
                        Box::pin(self.crawl_table(
                            store,
                            options,
                            &table.name,
                            &table.location,
                            "",
                            &[],
                            summary,
                        ))
                        .await?;
                        summary.tables_updated.retain(|t| t != &qualified);
                        summary.tables_unchanged.retain(|t| t != &qualified);
                    }
                    self.catalog
                        .set_deprecated(
                            table.id,
                            Some(&format!(
                                "its folder {} was gone at the crawl of {}",
                                table.location,
                                chrono::Utc::now()
                                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                            )),
                        )
                        .await?;
                    summary.tables_deprecated.push(qualified);
                }
            }
        }
        Ok(())
    }

    /// Refuses a crawl that would create more new tables than `--max-tables` allows
    /// (before anything is changed).
    async fn check_max_tables<'a>(
        &self,
        options: &CrawlOptions,
        names: impl Iterator<Item = &'a String>,
    ) -> Result<()> {
        let Some(limit) = options.shape.max_tables else {
            return Ok(());
        };
        let mut new_tables = Vec::new();
        for name in names {
            if self.catalog.table(&options.database, name).await?.is_none() {
                new_tables.push(name.as_str());
            }
        }
        if new_tables.len() > limit {
            return Err(Error::InvalidArgument(format!(
                "this crawl would create {} tables (limit {limit}: {}{}); nothing was \
                 changed. Check the location, crawl it as one table with --table, or raise \
                 --max-tables",
                new_tables.len(),
                new_tables
                    .iter()
                    .take(5)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", "),
                if new_tables.len() > 5 { ", …" } else { "" }
            )));
        }
        Ok(())
    }

    async fn crawl_inner(
        &self,
        location: &Location,
        options: &CrawlOptions,
    ) -> Result<CrawlSummary> {
        let started = Instant::now();
        let store = self.stores.store_for(location)?;
        let prefix = location.prefix();
        let mut summary = CrawlSummary {
            location: location.to_string(),
            database: options.database.clone(),
            ..Default::default()
        };

        summary.listed_at = Some(chrono::Utc::now());
        let listed = list_objects(&store, location, &prefix, &options.within).await?;
        summary.files_listed = listed.len() as u64;
        self.report(|p| p.files_listed += listed.len() as u64);
        let pending = crate::deferred::pending(&self.catalog).await?;
        let store_url = location.store_url().as_str().to_string();
        let listed = without_replaced(listed, &pending, &store_url, &mut summary);
        summary.list_ms = started.elapsed().as_millis() as u64;
        let prefix_str = prefix.as_ref();
        let relative_of = |meta: &ObjectMeta| {
            let full = meta.location.as_ref();
            full.strip_prefix(prefix_str)
                .unwrap_or(full)
                .trim_start_matches('/')
                .to_string()
        };
        let foreign = foreign_table_roots(listed.iter().map(|m| {
            let full = m.location.as_ref();
            full.strip_prefix(prefix_str)
                .unwrap_or(full)
                .trim_start_matches('/')
        }));
        let delta_roots = delta_roots(location, options, &foreign, &mut summary);
        // Folders of partitions a table keeps outside its own folder (`ADD PARTITION …
        // LOCATION`) belong to that table: its own crawl lists them, so they are not
        // discovered again here as tables of their own.
        let pinned_elsewhere = self.pinned_outside(&options.database).await?;
        let delta_newest = newest_delta_versions(listed.iter().map(&relative_of), &delta_roots);
        // Every object listed, filtered or not: a folder holding any is not gone.
        let listed_relatives: Vec<String> = listed.iter().map(&relative_of).collect();
        let skip = Filters {
            options,
            include: glob_set(&options.shape.include)?,
            exclude: glob_set(&options.shape.exclude)?,
            foreign: &foreign,
            pinned_elsewhere: &pinned_elsewhere,
        };
        let mut candidates: Vec<Candidate> = listed
            .into_iter()
            .filter_map(|meta| {
                let relative = relative_of(&meta);
                skip.candidate(meta, relative, &mut summary)
            })
            .collect();
        candidates.sort_by(|a, b| a.relative.cmp(&b.relative));
        let relatives: Vec<String> = candidates.iter().map(|c| c.relative.clone()).collect();
        let grouping = match (&options.shape.table, options.shape.table_level) {
            (Some(_), _) => Grouping::Level(1),
            (None, Some(level)) => Grouping::Level(level),
            (None, None) => Grouping::Discover,
        };
        let mut layouts = group_tables(&relatives, grouping);
        if let (None, Some(level)) = (&options.shape.table, options.shape.table_level) {
            let grouped: BTreeSet<usize> = layouts
                .iter()
                .flat_map(|l| l.files.iter().copied())
                .collect();
            for (i, c) in candidates.iter().enumerate() {
                if !grouped.contains(&i) {
                    summary.problems.push(Problem {
                        path: c.meta.location.to_string(),
                        message: format!(
                            "above the table level ({level}): in no table; crawl with a \
                             lower --table-level to include it"
                        ),
                    });
                }
            }
        }
        if layouts.is_empty() && options.shape.table.is_some() && delta_roots.is_empty() {
            // A named table whose folder holds no data (yet, or any more): still crawl it,
            // so its catalogued files are dropped or its declared layout is created.
            layouts.push(layout::TableLayout {
                root: String::new(),
                files: Vec::new(),
            });
        }

        let mut names_seen: BTreeSet<String> = BTreeSet::new();
        let mut seen_locations: BTreeSet<String> = BTreeSet::new();
        let mut planned_delta = Vec::with_capacity(delta_roots.len());
        for root in &delta_roots {
            let (name, _, table_url) =
                place_table(options, location, &prefix, root, &mut names_seen);
            seen_locations.insert(table_url.clone());
            planned_delta.push((name, table_url, delta_newest.get(root).copied()));
        }
        let mut planned = Vec::with_capacity(layouts.len());
        for layout in layouts {
            let (name, table_path, table_url) =
                place_table(options, location, &prefix, &layout.root, &mut names_seen);
            seen_locations.insert(table_url.clone());
            planned.push((layout, name, table_path, table_url));
        }
        let names = planned
            .iter()
            .map(|(_, name, _, _)| name)
            .chain(planned_delta.iter().map(|(name, _, _)| name));
        self.check_max_tables(options, names).await?;
        for (name, table_url, newest) in planned_delta {
            self.crawl_delta(&store, options, &name, &table_url, newest, &mut summary)
                .await?;
        }
        for (layout, name, table_path, table_url) in planned {
            let files: Vec<&Candidate> = layout.files.iter().map(|i| &candidates[*i]).collect();
            // Boxed: a table's crawl keeps a large state across its awaits, which would
            // otherwise sit on the stack of every caller's future.
            Box::pin(self.crawl_table(
                &store,
                options,
                &name,
                &table_url,
                table_path.as_ref(),
                &files,
                &mut summary,
            ))
            .await?;
        }

        self.gone_tables(
            &store,
            location,
            options,
            &listed_relatives,
            &seen_locations,
            &mut summary,
        )
        .await?;
        summary.elapsed_ms = started.elapsed().as_millis() as u64;
        Ok(summary)
    }

    /// Catalogues the Delta table at `table_url` at the newest version of its log. When the
    /// listing shows the version already catalogued, nothing is read.
    async fn crawl_delta(
        &self,
        store: &Arc<dyn ObjectStore>,
        options: &CrawlOptions,
        name: &str,
        table_url: &str,
        newest: Option<u64>,
        summary: &mut CrawlSummary,
    ) -> Result<()> {
        let qualified = format!("{}.{name}", options.database);
        let Some(existing) = self.table_at(options, name, table_url, summary).await? else {
            return Ok(());
        };
        let properties = match &existing {
            Some(t) => self.catalog.table_properties(t.id).await?,
            None => crate::catalog::TableProperties::default(),
        };
        if let Some(t) = &existing
            && t.format == TableFormat::Delta
            && newest.is_some()
            && properties.delta_version() == newest
        {
            if properties.deprecated.is_some() {
                // Its log is back as it was.
                self.catalog.set_deprecated(t.id, None).await?;
                summary.tables_updated.push(qualified);
            } else {
                summary.tables_unchanged.push(qualified);
            }
            return Ok(());
        }
        let opened = match crate::delta::open(Arc::clone(store), table_url, At::Newest).await {
            Ok(table) => crate::delta::describe(&table, table_url),
            Err(e) => Err(e),
        };
        let described = match opened {
            Ok(d) => d,
            Err(e) => {
                summary.problems.push(Problem {
                    path: table_url.to_string(),
                    message: format!("{e}; the table was left as it was"),
                });
                return Ok(());
            }
        };
        if let Some(t) = &existing
            && t.format == TableFormat::Delta
            && options.shape.schema_change != SchemaChangePolicy::Update
            && let Some(change) = describe_schema_change(&t.file_schema, &described.schema)
        {
            let fail = options.shape.schema_change == SchemaChangePolicy::Fail;
            summary.problems.push(Problem {
                path: table_url.to_string(),
                message: if fail {
                    format!(
                        "the schema of {qualified} changed in Delta version {} ({change}); with \
                         --schema-change fail the table stays at the version catalogued before",
                        described.version
                    )
                } else {
                    format!(
                        "the schema of {qualified} changed in Delta version {} ({change}); a \
                         Delta table's columns are those of its log, so the table takes them",
                        described.version
                    )
                },
            });
            if fail {
                summary.tables_unchanged.push(qualified);
                return Ok(());
            }
        }
        let commit = TableCommit {
            database: options.database.clone(),
            name: name.to_string(),
            location: table_url.to_string(),
            format: TableFormat::Delta,
            partition_columns: Vec::new(),
            // The Delta log's schema is the table's, whatever the catalog held.
            file_schema: Arc::clone(&described.schema),
            base_schema_version: None,
            upserts: Vec::new(),
            removals: Vec::new(),
            declared: None,
            format_state: Some(crate::delta::format_state(&described)),
            create_only: options.create_only,
            one_file_per_partition: false,
            removals_read: false,
            from_listing: false,
            stream_flushed: None,
        };
        let commit_started = Instant::now();
        let outcome = self.catalog.commit_table(&commit).await?;
        summary.commit_ms += commit_started.elapsed().as_millis() as u64;
        if let Some(t) = &existing
            && properties.deprecated.is_some()
        {
            // A log that is there again ends a deprecation.
            self.catalog.set_deprecated(t.id, None).await?;
        }
        record(summary, &outcome, qualified);
        Ok(())
    }

    /// Reads the footers of local Parquet files (`indices` into `files`), in batches on
    /// blocking threads, four per core at once (at most `concurrency`).
    async fn read_local_footers(
        &self,
        files: &[&Candidate],
        indices: &[usize],
        concurrency: usize,
    ) -> Vec<(usize, std::result::Result<FileRead, ReadError>)> {
        // Small batches, four per core in flight: when the files are not in the page
        // cache, reads wait on the disk, and more of them outstanding keep it busy (a
        // crawl after dropping the cache ran 1.6x faster than with two batches of 64);
        // when they are cached, the cores stay busy either way.
        const BATCH: usize = 16;
        let fs = object_store::local::LocalFileSystem::new();
        let mut unmapped = Vec::new();
        let mut batches: Vec<Vec<(usize, footer::LocalFile)>> = Vec::new();
        for chunk in indices.chunks(BATCH) {
            let mut batch = Vec::with_capacity(chunk.len());
            for &i in chunk {
                let meta = &files[i].meta;
                match fs.path_to_filesystem(&meta.location) {
                    Ok(file) => batch.push((
                        i,
                        footer::LocalFile {
                            file,
                            size: meta.size,
                            path: meta.location.clone(),
                        },
                    )),
                    Err(e) => unmapped.push((i, Err(ReadError::Footer(FooterError::Store(e))))),
                }
            }
            batches.push(batch);
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut reads: Vec<(usize, std::result::Result<FileRead, ReadError>)> =
            futures::stream::iter(batches)
                .map(|batch| async move {
                    let (indices, local): (Vec<usize>, Vec<footer::LocalFile>) =
                        batch.into_iter().unzip();
                    let bytes: u64 = local.iter().map(|f| f.size).sum();
                    let n = local.len() as u64;
                    let footers =
                        tokio::task::spawn_blocking(move || footer::read_local_footers(&local))
                            .await;
                    self.report(|p| {
                        p.footers_read += n;
                        p.bytes += bytes;
                    });
                    let footers: Vec<std::result::Result<FileRead, ReadError>> = match footers {
                        Ok(footers) => footers
                            .into_iter()
                            .map(|r| r.map(FileRead::Parquet).map_err(ReadError::Footer))
                            .collect(),
                        Err(e) => indices
                            .iter()
                            .map(|_| {
                                Err(ReadError::Footer(FooterError::Corrupt(format!(
                                    "file reader failed: {e}"
                                ))))
                            })
                            .collect(),
                    };
                    indices.into_iter().zip(footers).collect::<Vec<_>>()
                })
                .buffer_unordered((cores * 4).min(concurrency).max(1))
                .flat_map(futures::stream::iter)
                .collect()
                .await;
        self.report(|p| p.footers_read += unmapped.len() as u64);
        reads.extend(unmapped);
        reads
    }

    /// The tables of `database` with partitions in folders outside their own, and those
    /// folders (object paths).
    async fn pinned_outside(&self, database: &str) -> Result<Vec<(String, String)>> {
        let with_pins: HashMap<i64, Vec<PinnedPartition>> = self
            .catalog
            .tables_with_pinned_partitions()
            .await?
            .into_iter()
            .collect();
        if with_pins.is_empty() {
            return Ok(Vec::new());
        }
        let mut pinned = Vec::new();
        for table in self.catalog.tables().await? {
            let Some(pins) = with_pins.get(&table.id) else {
                continue;
            };
            if table.database != database {
                continue;
            }
            let own = Location::parse_catalogued(&table.location)?.prefix();
            for pin in pins {
                if !is_under(&pin.path, own.as_ref()) {
                    pinned.push((table.location.clone(), pin.path.clone()));
                }
            }
        }
        Ok(pinned)
    }

    /// The catalogued table `name` (`Some(None)` when there is none yet), or `None` when
    /// the name is taken by a table at another location, which is reported.
    async fn table_at(
        &self,
        options: &CrawlOptions,
        name: &str,
        table_url: &str,
        summary: &mut CrawlSummary,
    ) -> Result<Option<Option<crate::catalog::TableEntry>>> {
        let existing = self.catalog.table(&options.database, name).await?;
        if let Some(t) = &existing
            && t.location != table_url
        {
            summary.problems.push(Problem {
                path: table_url.to_string(),
                message: format!(
                    "table {}.{name} already exists for location {}; crawl this folder \
                     with --table to give it another name",
                    options.database, t.location
                ),
            });
            return Ok(None);
        }
        Ok(Some(existing))
    }
}

/// The URL of `path`, a folder in the store of the table at `table_url`.
fn pin_url(table_url: &str, path: &str) -> String {
    match Location::parse_catalogued(table_url) {
        Ok(l) => format!("{}{path}/", l.store_url().as_str()),
        Err(_) => format!("{path}/"),
    }
}

/// Counts a committed table in the crawl's summary.
fn record(summary: &mut CrawlSummary, outcome: &crate::catalog::CommitOutcome, qualified: String) {
    if outcome.new_schema_version && !outcome.created {
        summary.schema_versions_added += 1;
    }
    if outcome.created {
        summary.tables_created.push(qualified);
    } else if outcome.changed {
        summary.tables_updated.push(qualified);
    } else {
        summary.tables_unchanged.push(qualified);
    }
}

/// What reading the start or the footer of a file gave.
enum FileRead {
    Parquet(footer::Footer),
    Text(text::TextSample),
}

impl FileRead {
    fn format(&self) -> FileFormat {
        match self {
            FileRead::Parquet(_) => FileFormat::Parquet,
            FileRead::Text(t) => t.format,
        }
    }
}

enum ReadError {
    Footer(FooterError),
    Sample(text::SampleError),
}

/// Reads what the catalog needs of one file: a Parquet footer, or a sample of a CSV or JSON
/// file's start. A name without a known extension is tried as Parquet, then as text.
async fn read_file(
    store: &dyn ObjectStore,
    meta: &ObjectMeta,
    header: Option<bool>,
    sample_bytes: u64,
    sample_rows: usize,
) -> std::result::Result<FileRead, ReadError> {
    let sample = |format| async move {
        text::sample(
            store,
            &meta.location,
            meta.size,
            format,
            header,
            sample_bytes,
            sample_rows,
        )
        .await
        .map(FileRead::Text)
        .map_err(ReadError::Sample)
    };
    match text::format_from_name(meta.location.as_ref()) {
        Some(FileFormat::Parquet) => read_footer(store, &meta.location, meta.size)
            .await
            .map(FileRead::Parquet)
            .map_err(ReadError::Footer),
        Some(format) => sample(Some(format)).await,
        None => match read_footer(store, &meta.location, meta.size).await {
            Ok(footer) => Ok(FileRead::Parquet(footer)),
            // Only names without an extension (Firehose writes none) are sniffed: a
            // `README.txt` or `app.log` in a lake is not a table.
            Err(FooterError::NotParquet) if !text::has_extension(meta.location.as_ref()) => {
                sample(None).await
            }
            Err(e) => Err(ReadError::Footer(e)),
        },
    }
}

/// The newest version in the log of each Delta table root, from the listing alone: a
/// commit `_delta_log/<version>.json` or a checkpoint `_delta_log/<version>.checkpoint….parquet`.
fn newest_delta_versions(
    relatives: impl Iterator<Item = String>,
    roots: &[String],
) -> HashMap<String, u64> {
    let mut newest: HashMap<String, u64> = HashMap::new();
    if roots.is_empty() {
        return newest;
    }
    for relative in relatives {
        let (root, file) = match relative.rsplit_once("_delta_log/") {
            Some((root, file)) => (root.trim_end_matches('/'), file),
            None => continue,
        };
        if file.contains('/') || !roots.iter().any(|r| r == root) {
            continue;
        }
        if let Some(version) = layout::delta_log_version(file) {
            let entry = newest.entry(root.to_string()).or_insert(version);
            *entry = (*entry).max(version);
        }
    }
    newest
}

/// The column order a CSV table's new files must follow (each file's header must be its
/// first columns): the one the files it keeps were read with, else the header most of
/// its new files have (the longest on a tie), so one odd file cannot turn the rest away.
fn csv_column_order(
    kept: &[(usize, FileEntry)],
    reads: &[(usize, std::result::Result<FileRead, ReadError>)],
    partition_names: &BTreeSet<&str>,
) -> Vec<String> {
    let names = |schema: &Schema| -> Vec<String> {
        schema.fields().iter().map(|f| f.name().clone()).collect()
    };
    // Kept files passed this check when they came: the longest header holds the others.
    if let Some(longest) = kept
        .iter()
        .map(|(_, f)| &f.file_schema)
        .max_by_key(|s| s.fields().len())
    {
        return names(longest);
    }
    let mut counts: HashMap<Vec<String>, usize> = HashMap::new();
    for (_, read) in reads {
        if let Ok(FileRead::Text(t)) = read
            && t.format == FileFormat::Csv
            && !t
                .schema
                .fields()
                .iter()
                .any(|f| partition_names.contains(f.name().as_str()))
        {
            *counts.entry(names(&t.schema)).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by(|(a, n), (b, m)| n.cmp(m).then(a.len().cmp(&b.len())).then(b.cmp(a)))
        .map(|(order, _)| order)
        .unwrap_or_default()
}

/// Why a CSV file with a header cannot join a table whose columns so far are `order`
/// (read by position), or `None` after extending `order` with the columns it adds.
fn csv_order_problem(
    file: &Schema,
    order: &mut Vec<String>,
    partition_names: &BTreeSet<&str>,
    qualified: &str,
) -> Option<String> {
    let names: Vec<&str> = file.fields().iter().map(|f| f.name().as_str()).collect();
    let partitions: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| partition_names.contains(n))
        .collect();
    if !partitions.is_empty() {
        return Some(format!(
            "its header has the partition column {}, whose values the folder names give; \
             CSV columns are read by position, so this file was left out; write it without \
             that column, or crawl it with declared columns",
            partitions.join(", ")
        ));
    }
    if names.iter().zip(order.iter()).all(|(a, b)| *a == b) {
        order.extend(names.iter().skip(order.len()).map(|n| n.to_string()));
        return None;
    }
    Some(format!(
        "its header names the columns ({}) in another order than {qualified} ({}); CSV \
         columns are read by position, so this file was left out; write it with the table's \
         column order, or move it to a table of its own",
        names.join(", "),
        order
            .iter()
            .take(names.len().max(1))
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// A file is unchanged when its size and ETag match (or, without ETags, its modification
/// time): then its footer is not read again, unless its statistics are out of date.
fn unchanged(old: &FileEntry, meta: &ObjectMeta) -> bool {
    old.size == meta.size
        && match (&old.e_tag, &meta.e_tag) {
            (Some(a), Some(b)) => a == b,
            _ => old.last_modified == meta.last_modified,
        }
}

/// Whether a catalogued file's statistics are of this build's version: a Parquet file
/// (one with a footer) whose statistics an older build read is read again.
fn stats_current(old: &FileEntry) -> bool {
    old.footer_size.is_none() || old.stats_version >= STATS_VERSION
}

/// The file's columns minus those named like partition columns (Hive semantics: the
/// folder's value wins over a column stored in the file).
fn without(schema: &arrow::datatypes::Schema, names: &BTreeSet<&str>) -> arrow::datatypes::Schema {
    if names.is_empty() {
        return schema.clone();
    }
    arrow::datatypes::Schema::new(
        schema
            .fields()
            .iter()
            .filter(|f| !names.contains(f.name().as_str()))
            .cloned()
            .collect::<Vec<_>>(),
    )
}

/// What a crawl leaves out of its candidate files.
struct Filters<'a> {
    options: &'a CrawlOptions,
    include: globset::GlobSet,
    exclude: globset::GlobSet,
    /// Delta and Iceberg tables' folders.
    foreign: &'a [(String, ForeignFormat)],
    /// Folders of partitions other tables keep outside their own folders.
    pinned_elsewhere: &'a [(String, String)],
}

impl Filters<'_> {
    /// The object at `relative` as a candidate data file, or `None` (counted in `summary`)
    /// when it is another table format's, another table's partition, filtered out by the
    /// include and exclude globs, hidden, still being written or empty.
    fn candidate(
        &self,
        meta: ObjectMeta,
        relative: String,
        summary: &mut CrawlSummary,
    ) -> Option<Candidate> {
        if self
            .foreign
            .iter()
            .any(|(root, _)| is_under(&relative, root))
        {
            summary.skipped.other_format += 1;
            return None;
        }
        if self
            .pinned_elsewhere
            .iter()
            .any(|(_, pin)| is_under(meta.location.as_ref(), pin))
        {
            summary.skipped.excluded += 1;
            return None;
        }
        let options = self.options;
        let matched = if options.glob_prefix.is_empty() {
            std::borrow::Cow::Borrowed(relative.as_str())
        } else {
            std::borrow::Cow::Owned(format!("{}/{relative}", options.glob_prefix))
        };
        if (!options.shape.include.is_empty() && !self.include.is_match(matched.as_ref()))
            || self.exclude.is_match(matched.as_ref())
        {
            summary.skipped.excluded += 1;
            return None;
        }
        match classify(&relative, meta.size) {
            Some(Skip::Hidden) => summary.skipped.hidden += 1,
            Some(Skip::InProgress) => summary.skipped.in_progress += 1,
            Some(Skip::Empty) => summary.skipped.empty += 1,
            None => return Some(Candidate { meta, relative }),
        }
        None
    }
}

/// The roots of the Delta tables among the `foreign` tables found (catalogued from their
/// logs); an Iceberg table, and a Delta table inside the folder of a table crawled by name,
/// are reported in `summary`.
fn delta_roots(
    location: &Location,
    options: &CrawlOptions,
    foreign: &[(String, ForeignFormat)],
    summary: &mut CrawlSummary,
) -> Vec<String> {
    let mut delta_roots: Vec<String> = Vec::new();
    for (root, format) in foreign {
        let path = if root.is_empty() {
            location.to_string()
        } else {
            format!("{location}{root}/")
        };
        let message = match format {
            ForeignFormat::Delta if options.shape.table.is_none() || root.is_empty() => {
                delta_roots.push(root.clone());
                continue;
            }
            ForeignFormat::Delta => "a Delta Lake table inside the folder of the named \
                 table: its files were not crawled as loose Parquet; crawl its own folder to \
                 catalogue it as a Delta table"
                .to_string(),
            ForeignFormat::Iceberg => "an Iceberg table: Tarn does not read Iceberg tables \
                 yet, so its files were not crawled as loose Parquet (they can include files \
                 the table has removed)"
                .to_string(),
        };
        summary.problems.push(Problem { path, message });
    }
    delta_roots
}

/// The name, path and URL of a table found at `root` (relative to the crawled folder
/// `prefix`): the named table's name, else one made from its folder's name (from its whole
/// relative path when another table of this crawl has that name).
fn place_table(
    options: &CrawlOptions,
    location: &Location,
    prefix: &object_store::path::Path,
    root: &str,
    names_seen: &mut BTreeSet<String>,
) -> (String, object_store::path::Path, String) {
    let prefix_str = prefix.as_ref();
    let name = match &options.shape.table {
        Some(t) => t.clone(),
        None => {
            let base = if root.is_empty() {
                prefix_str.rsplit('/').next().unwrap_or("")
            } else {
                root.rsplit('/').next().unwrap_or("")
            };
            let mut name = table_name_from(base);
            if names_seen.contains(&name) {
                name = table_name_from(&root.replace('/', "_"));
            }
            name
        }
    };
    names_seen.insert(name.clone());
    let table_path = if root.is_empty() {
        prefix.clone()
    } else if prefix_str.is_empty() {
        object_store::path::Path::from(root)
    } else {
        object_store::path::Path::from(format!("{prefix_str}/{root}"))
    };
    let table_url = location.child_url(&table_path);
    (name, table_path, table_url)
}
