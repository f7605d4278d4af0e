//! The crawl of one table of plain files (Parquet, CSV, JSON), step by step: the files of
//! pinned partition folders outside the table's folder, each file's partition, which files
//! are unchanged and which must be read, reading them, the table's one format and CSV
//! dialect, merging their schemas, the schema-change policy, and one catalog commit.

use super::*;
use crate::catalog::{FormatState, TableProperties};

/// A table's crawl: what is known before any of its files is read.
struct TableCrawl<'a> {
    options: &'a CrawlOptions,
    qualified: String,
    table_url: &'a str,
    table_path: &'a str,
    existing: Option<crate::catalog::TableEntry>,
    properties: TableProperties,
    /// The layout declared at earlier crawls, and now (the options' over it).
    earlier: Declared,
    declared: Declared,
    /// The table's files as the catalog has them, by path.
    old_files: HashMap<String, FileEntry>,
}

/// Where each file belongs: its pinned partition (if a pinned folder holds it) and its
/// placement, and the table's partition keys.
struct Placed<'p> {
    pinned: Vec<Option<&'p PinnedPartition>>,
    placements: Vec<layout::FilePlacement>,
    keys: Vec<String>,
    /// Whether the keys are the existing table's.
    same_keys: bool,
}

/// Which files are unchanged and which must be read.
#[derive(Default)]
struct Triage {
    /// Unchanged, as the catalog has them (`usize::MAX`: not listed by this crawl).
    kept: Vec<(usize, FileEntry)>,
    to_read: Vec<usize>,
    /// Unchanged files read again for newer statistics, as the catalog has them.
    restat: HashMap<usize, FileEntry>,
}

/// How text files are sampled.
#[derive(Clone, Copy)]
struct Sampling {
    /// A CSV table's header decision, kept from its first crawl.
    header: Option<bool>,
    bytes: u64,
    rows: usize,
}

type Reads = Vec<(usize, std::result::Result<FileRead, ReadError>)>;

/// A CSV table's header decision and delimiter.
struct Dialect {
    has_header: bool,
    delimiter: u8,
}

/// Why one attempt at a table's crawl did not commit.
enum CrawlError {
    /// Another writer changed the table's schema since the attempt read it.
    SchemaMoved(String),
    Other(Error),
}

impl<E: Into<Error>> From<E> for CrawlError {
    fn from(e: E) -> Self {
        CrawlError::Other(e.into())
    }
}

/// How often a table's crawl starts again from the catalog's new state when other writers
/// keep changing the table's schema under it.
const SCHEMA_ATTEMPTS: usize = 8;

impl Crawler {
    /// Crawls one table ([`Self::crawl_table_once`]); when another writer changed the
    /// table's schema between this crawl's read and its commit, the crawl runs again from
    /// the new state (only files that changed are read again), so the columns both
    /// brought are kept.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn crawl_table(
        &self,
        store: &Arc<dyn ObjectStore>,
        options: &CrawlOptions,
        name: &str,
        table_url: &str,
        table_path: &str,
        files: &[&Candidate],
        summary: &mut CrawlSummary,
    ) -> Result<()> {
        for attempt in 1..=SCHEMA_ATTEMPTS {
            let before = summary.clone();
            let crawled = Box::pin(
                self.crawl_table_once(store, options, name, table_url, table_path, files, summary),
            )
            .await;
            match crawled {
                Err(CrawlError::SchemaMoved(message)) if attempt < SCHEMA_ATTEMPTS => {
                    tracing::debug!(table = name, attempt, %message, "crawling again");
                    *summary = before;
                }
                Err(CrawlError::SchemaMoved(message)) => return Err(Error::Conflict(message)),
                Err(CrawlError::Other(e)) => return Err(e),
                Ok(()) => return Ok(()),
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn crawl_table_once(
        &self,
        store: &Arc<dyn ObjectStore>,
        options: &CrawlOptions,
        name: &str,
        table_url: &str,
        table_path: &str,
        files: &[&Candidate],
        summary: &mut CrawlSummary,
    ) -> Result<(), CrawlError> {
        let Some(existing) = self.table_at(options, name, table_url, summary).await? else {
            return Ok(());
        };
        let t = self
            .table_crawl(options, name, table_url, table_path, existing)
            .await?;
        let pins = t.pins();
        let outside = self.list_pinned_outside(store, &t, &pins, summary).await?;
        let with_outside: Vec<&Candidate> = files.iter().copied().chain(&outside).collect();
        let files = with_outside.as_slice();
        let placed = t.place(files, &pins);
        let Some(triage) = t.triage(files, &placed, summary) else {
            return Ok(());
        };

        // What the table is already: its format (while it keeps files) and, for CSV, its
        // header and delimiter, which new files are read with.
        let existing_format = t
            .existing
            .as_ref()
            .and_then(|e| FileFormat::of_table(e.format));
        let sample_rows = options.sample_rows();
        let sampling = Sampling {
            header: t.properties.csv_dialect().map(|(header, _)| header),
            bytes: (sample_rows as u64 * 1024).clamp(1 << 20, 64 << 20),
            rows: sample_rows,
        };
        let mut reads = self
            .read_files(store, &t, files, &triage.to_read, sampling, summary)
            .await;
        let format = table_format(existing_format, !triage.kept.is_empty(), &reads);
        let dialect = t
            .csv_dialect(store, files, &mut reads, format, sampling)
            .await;
        let (merger, new_entries) =
            t.merge(files, &placed, &triage, reads, format, &dialect, summary);

        let partition_columns = t.partition_columns(&placed.keys, &triage.kept, &new_entries);
        if t.existing.is_none() && new_entries.is_empty() && t.declared.is_empty() {
            return Ok(()); // nothing usable here: no table to create
        }
        let removals = t.count_changes(&triage, &new_entries, summary);
        let file_schema = t.table_schema(merger, &triage.kept, &new_entries);
        let Some(file_schema) = t.schema_policy(file_schema, format, summary) else {
            return Ok(());
        };
        let holds_files = !new_entries.is_empty() || !triage.kept.is_empty();
        let commit = TableCommit {
            database: options.database.clone(),
            name: name.to_string(),
            location: table_url.to_string(),
            format: format.table_format(),
            partition_columns,
            file_schema,
            // The schema was merged from what the catalog held then; a declared one is the
            // table's whatever it held.
            base_schema_version: t
                .existing
                .as_ref()
                .filter(|_| t.declared.schema.is_none())
                .map(|e| e.schema_version),
            upserts: new_entries.into_iter().map(|(_, f)| f).collect(),
            removals,
            // What the user declared travels with the commit: same transaction.
            create_only: options.create_only,
            one_file_per_partition: false,
            removals_read: false,
            from_listing: true,
            stream_flushed: None,
            format_state: match format {
                FileFormat::Parquet => None,
                FileFormat::Csv => Some(FormatState::Csv {
                    has_header: dialect.has_header,
                    delimiter: char::from(dialect.delimiter),
                }),
                FileFormat::Json => Some(FormatState::Json(Default::default())),
            },
            declared: (t.declared != t.earlier).then(|| t.declared.clone()),
        };
        let commit_started = Instant::now();
        let outcome = match self.catalog.commit_table(&commit).await {
            Ok(outcome) => outcome,
            Err(crate::catalog::Error::SchemaMoved(m)) => return Err(CrawlError::SchemaMoved(m)),
            Err(e) => return Err(CrawlError::Other(e.into())),
        };
        summary.commit_ms += commit_started.elapsed().as_millis() as u64;
        if let Some(e) = &t.existing
            && holds_files
            && t.properties.deprecated.is_some()
        {
            // Its folder is back.
            self.catalog.set_deprecated(e.id, None).await?;
        }
        summary.partitions_added += outcome.partitions_added;
        summary.partitions_removed += outcome.partitions_removed;
        record(summary, &outcome, t.qualified);
        Ok(())
    }

    /// What a table's crawl starts from: its properties, declared layout and files.
    async fn table_crawl<'a>(
        &self,
        options: &'a CrawlOptions,
        name: &'a str,
        table_url: &'a str,
        table_path: &'a str,
        existing: Option<crate::catalog::TableEntry>,
    ) -> Result<TableCrawl<'a>> {
        let properties = match &existing {
            Some(t) => self.catalog.table_properties(t.id).await?,
            None => TableProperties::default(),
        };
        let earlier = properties.declared.clone();
        let declared = options.declared().or(&earlier);
        let old_files: HashMap<String, FileEntry> = match &existing {
            Some(t) => self
                .catalog
                .file_index(t.id)
                .await?
                .into_iter()
                .map(|f| (f.path.clone(), f))
                .collect(),
            None => HashMap::new(),
        };
        Ok(TableCrawl {
            options,
            qualified: format!("{}.{name}", options.database),
            table_url,
            table_path,
            existing,
            properties,
            earlier,
            declared,
            old_files,
        })
    }

    /// The files of pinned partitions whose folders are outside the table's folder (not
    /// in event mode, where files outside the folders the events name stay as catalogued).
    async fn list_pinned_outside(
        &self,
        store: &Arc<dyn ObjectStore>,
        t: &TableCrawl<'_>,
        pins: &[PinnedPartition],
        summary: &mut CrawlSummary,
    ) -> Result<Vec<Candidate>> {
        let mut outside: Vec<Candidate> = Vec::new();
        if !t.options.within.is_empty() {
            return Ok(outside);
        }
        for pin in pins.iter().filter(|p| !is_under(&p.path, t.table_path)) {
            // Kept as the store names it (`prefix()` of the location), so parsed, not
            // encoded again.
            let folder = object_store::path::Path::parse(&pin.path).map_err(|e| {
                Error::InvalidArgument(format!(
                    "partition folder {} of {}: {e}",
                    pin_url(t.table_url, &pin.path),
                    t.qualified
                ))
            })?;
            let listed: Vec<ObjectMeta> = store
                .list(Some(&folder))
                .try_collect()
                .await
                .map_err(|e| Error::store(pin_url(t.table_url, &pin.path), e))?;
            summary.files_listed += listed.len() as u64;
            self.report(|p| p.files_listed += listed.len() as u64);
            let pending = crate::deferred::pending(&self.catalog).await?;
            let store_url = Location::parse(t.table_url)?
                .store_url()
                .as_str()
                .to_string();
            let listed = without_replaced(listed, &pending, &store_url, summary);
            for meta in listed {
                let relative = meta
                    .location
                    .as_ref()
                    .strip_prefix(pin.path.as_str())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string();
                match classify(&relative, meta.size) {
                    Some(Skip::Hidden) => summary.skipped.hidden += 1,
                    Some(Skip::InProgress) => summary.skipped.in_progress += 1,
                    Some(Skip::Empty) => summary.skipped.empty += 1,
                    None => outside.push(Candidate { meta, relative }),
                }
            }
        }
        Ok(outside)
    }

    /// Reads the footers and samples of `to_read`: local Parquet files in batches on
    /// blocking threads (one hand-off per batch, not two per file), everything else
    /// through the object store, each read its own task so decoding uses every core (at
    /// most `footer_concurrency` in flight). Sorted by file.
    async fn read_files(
        &self,
        store: &Arc<dyn ObjectStore>,
        t: &TableCrawl<'_>,
        files: &[&Candidate],
        to_read: &[usize],
        sampling: Sampling,
        summary: &mut CrawlSummary,
    ) -> Reads {
        self.report(|p| p.footers_to_read += to_read.len() as u64);
        let footer_started = Instant::now();
        let options = t.options;
        let local =
            Location::parse_catalogued(t.table_url).is_ok_and(|l| self.stores.is_plain_local(&l));
        let (local_parquet, to_read): (Vec<usize>, Vec<usize>) =
            to_read.iter().copied().partition(|&i| {
                local
                    && text::format_from_name(files[i].meta.location.as_ref())
                        == Some(FileFormat::Parquet)
            });
        let mut reads = self
            .read_local_footers(files, &local_parquet, options.footer_concurrency)
            .await;
        let remote_reads: Reads = futures::stream::iter(to_read.iter().copied())
            .map(|i| {
                let store = Arc::clone(store);
                let meta = files[i].meta.clone();
                let task = tokio::spawn(async move {
                    read_file(
                        store.as_ref(),
                        &meta,
                        sampling.header,
                        sampling.bytes,
                        sampling.rows,
                    )
                    .await
                });
                async move {
                    let result = task.await.unwrap_or_else(|e| {
                        Err(ReadError::Footer(FooterError::Corrupt(format!(
                            "file reader failed: {e}"
                        ))))
                    });
                    (i, result)
                }
            })
            .buffer_unordered(options.footer_concurrency.max(1))
            .inspect(|(i, _)| {
                let size = files[*i].meta.size;
                self.report(|p| {
                    p.footers_read += 1;
                    p.bytes += size;
                });
            })
            .collect()
            .await;
        reads.extend(remote_reads);
        summary.footer_ms += footer_started.elapsed().as_millis() as u64;
        reads.sort_by_key(|(i, _)| *i);
        for (_, read) in &reads {
            match read {
                Ok(FileRead::Parquet(_)) | Err(ReadError::Footer(_)) => summary.footers_read += 1,
                Ok(FileRead::Text(_)) | Err(ReadError::Sample(_)) => summary.samples_read += 1,
            }
        }
        reads
    }
}

/// One format per table: the one it holds (while it keeps files), else the one most of its
/// new files have (on a tie Parquet, then CSV, then JSON).
fn table_format(existing: Option<FileFormat>, keeps_files: bool, reads: &Reads) -> FileFormat {
    match existing {
        Some(f) if keeps_files => f,
        _ => {
            let mut counts: BTreeMap<FileFormat, usize> = BTreeMap::new();
            for (_, read) in reads {
                if let Ok(r) = read {
                    *counts.entry(r.format()).or_default() += 1;
                }
            }
            counts
                .iter()
                .max_by_key(|(f, n)| (**n, std::cmp::Reverse(**f)))
                .map(|(f, _)| *f)
                .or(existing)
                .unwrap_or(FileFormat::Parquet)
        }
    }
}

/// Equal schemas share one Arc (the catalog decodes each stored schema once; footers are
/// interned here), so a schema the merger has taken is not merged again.
#[derive(Default)]
struct Interner {
    interned: HashMap<Schema, SchemaRef>,
    by_address: HashMap<usize, SchemaRef>,
    /// The footers' own Arcs, alive while their addresses are keys (so an address cannot
    /// be reused by another schema).
    footer_schemas: Vec<SchemaRef>,
}

impl Interner {
    /// The shared Arc of `schema`'s value (footers read together share their schema's Arc:
    /// each such Arc is hashed once).
    fn intern(&mut self, schema: SchemaRef) -> SchemaRef {
        if let Some(known) = self.by_address.get(&(Arc::as_ptr(&schema) as usize)) {
            return Arc::clone(known);
        }
        let known = Arc::clone(
            self.interned
                .entry(schema.as_ref().clone())
                .or_insert_with(|| Arc::clone(&schema)),
        );
        self.by_address
            .insert(Arc::as_ptr(&schema) as usize, Arc::clone(&known));
        self.footer_schemas.push(schema);
        known
    }
}

/// What a file's read gave, when the table can take it; otherwise the reason is reported
/// (or the file counted as skipped) and `None` returned.
fn usable_read(
    result: std::result::Result<FileRead, ReadError>,
    table_format: FileFormat,
    qualified: &str,
    path: String,
    summary: &mut CrawlSummary,
) -> Option<FileRead> {
    let problem = |path: String, message: String, summary: &mut CrawlSummary| {
        summary.problems.push(Problem { path, message });
        None
    };
    match result {
        Ok(read) if read.format() != table_format => problem(
            path,
            format!(
                "a {} file in {qualified}, whose files are {table_format}: a table holds one \
                 format, so this file was left out; move it to a folder of its own or leave it \
                 out with --exclude",
                read.format()
            ),
            summary,
        ),
        Ok(read) => Some(read),
        Err(ReadError::Footer(FooterError::NotParquet))
        | Err(ReadError::Sample(text::SampleError::NotText(_)))
            if text::format_from_name(&path).is_none() =>
        {
            summary.skipped.not_parquet += 1;
            None
        }
        Err(ReadError::Footer(e @ (FooterError::NotParquet | FooterError::Corrupt(_)))) => {
            problem(path, format!("{e}; file left out of the table"), summary)
        }
        Err(
            ReadError::Footer(FooterError::Store(object_store::Error::NotFound { .. }))
            | ReadError::Sample(text::SampleError::Store(object_store::Error::NotFound { .. })),
        ) => problem(
            path,
            "deleted between listing and reading; left out".into(),
            summary,
        ),
        Err(ReadError::Footer(e @ FooterError::Store(_))) => {
            summary.retry.push(path.clone());
            problem(
                path,
                format!("{e}; file left out, crawl again to retry"),
                summary,
            )
        }
        Err(ReadError::Sample(e @ text::SampleError::Store(_))) => {
            summary.retry.push(path.clone());
            problem(
                path,
                format!("{e}; file left out, crawl again to retry"),
                summary,
            )
        }
        Err(ReadError::Sample(e)) => {
            problem(path, format!("{e}; file left out of the table"), summary)
        }
    }
}

impl TableCrawl<'_> {
    /// The table's pinned partitions (those of its current partition keys).
    fn pins(&self) -> Vec<PinnedPartition> {
        let keys = self.table_keys();
        self.properties
            .pinned_partitions
            .iter()
            .filter(|p| !keys.is_empty() && p.values.len() == keys.len())
            .cloned()
            .collect()
    }

    fn table_keys(&self) -> Vec<String> {
        self.existing
            .iter()
            .flat_map(|t| t.partition_columns.iter().map(|c| c.name.clone()))
            .collect()
    }

    /// Each file's partition, and the table's keys: the declared ones, else the layout
    /// most files share (others are reported when triaged).
    fn place<'p>(&self, files: &[&Candidate], pins: &'p [PinnedPartition]) -> Placed<'p> {
        let table_keys = self.table_keys();
        let pinned: Vec<Option<&PinnedPartition>> = files
            .iter()
            .map(|c| {
                pins.iter()
                    .find(|p| is_under(c.meta.location.as_ref(), &p.path))
            })
            .collect();
        let placements: Vec<_> = files
            .iter()
            .zip(&pinned)
            .map(|(c, pin)| {
                if let Some(pin) = pin {
                    return layout::FilePlacement {
                        keys: table_keys.clone(),
                        values: pin.values.clone(),
                        folder: String::new(),
                    };
                }
                let rel = c
                    .meta
                    .location
                    .as_ref()
                    .strip_prefix(self.table_path)
                    .unwrap_or(c.meta.location.as_ref())
                    .trim_start_matches('/')
                    .to_string();
                place_file(&rel)
            })
            .collect();
        let mut key_counts: BTreeMap<&Vec<String>, usize> = BTreeMap::new();
        for p in &placements {
            *key_counts.entry(&p.keys).or_default() += 1;
        }
        let keys: Vec<String> = match (&self.declared.partition_keys, &self.existing) {
            (Some(keys), _) => keys.clone(),
            // Folders of a table crawled on their own, now empty: the table's keys stand.
            (None, Some(t)) if key_counts.is_empty() && !self.options.within.is_empty() => {
                t.partition_columns.iter().map(|c| c.name.clone()).collect()
            }
            (None, _) => key_counts
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(k, _)| (*k).clone())
                .unwrap_or_default(),
        };
        let same_keys = self
            .existing
            .as_ref()
            .map(|t| t.partition_columns.iter().map(|c| &c.name).eq(keys.iter()))
            .unwrap_or(true);
        Placed {
            pinned,
            placements,
            keys,
            same_keys,
        }
    }

    /// Sorts the files into unchanged ones and those to read, reporting those whose
    /// folders do not fit the table. `None` when nothing of the table may change (only
    /// some folders were listed, and they have another layout).
    fn triage(
        &self,
        files: &[&Candidate],
        placed: &Placed<'_>,
        summary: &mut CrawlSummary,
    ) -> Option<Triage> {
        let keys = &placed.keys;
        let mut triage = Triage::default();
        for (i, c) in files.iter().enumerate() {
            let placement = &placed.placements[i];
            if placement.keys != *keys {
                summary.problems.push(Problem {
                    path: c.meta.location.to_string(),
                    message: format!(
                        "partition folders ({}) do not match the table's ({}); file left out",
                        placement.keys.join("/"),
                        keys.join("/")
                    ),
                });
                continue;
            }
            if let Some((key, value, t)) = self.misfit_value(keys, &placement.values) {
                summary.problems.push(Problem {
                    path: c.meta.location.to_string(),
                    message: format!(
                        "partition value {key}={value} is not a {t} as declared; file left out"
                    ),
                });
                continue;
            }
            match self.old_files.get(c.meta.location.as_ref()) {
                Some(old)
                    if placed.same_keys
                        && unchanged(old, &c.meta)
                        && (placed.pinned[i].is_none()
                            || old.partition_values == placement.values) =>
                {
                    if stats_current(old) {
                        triage.kept.push((i, old.clone()))
                    } else {
                        // Read again for newer statistics; kept as it was if that fails.
                        triage.restat.insert(i, old.clone());
                        triage.to_read.push(i)
                    }
                }
                _ => triage.to_read.push(i),
            }
        }
        if self.options.within.is_empty() {
            return Some(triage);
        }
        // Only some folders were listed: the table's files elsewhere stay as they are.
        if !placed.same_keys {
            summary.problems.push(Problem {
                path: self.table_url.to_string(),
                message: format!(
                    "the new files of {} are partitioned by ({}), the table by other columns; \
                     nothing was changed: crawl the whole table to take the new layout",
                    self.qualified,
                    keys.join(", ")
                ),
            });
            summary.tables_unchanged.push(self.qualified.clone());
            return None;
        }
        let listed: std::collections::HashSet<&str> =
            files.iter().map(|c| c.meta.location.as_ref()).collect();
        for (path, old) in &self.old_files {
            let relative = path
                .strip_prefix(self.table_path)
                .unwrap_or(path)
                .trim_start_matches('/');
            if !listed.contains(path.as_str())
                && !self.options.within.iter().any(|w| is_under(relative, w))
            {
                triage.kept.push((usize::MAX, old.clone()));
            }
        }
        Some(triage)
    }

    /// A partition value that is not of the type declared for its key.
    fn misfit_value<'v>(
        &self,
        keys: &'v [String],
        values: &'v [Option<String>],
    ) -> Option<(&'v String, &'v str, PartitionType)> {
        keys.iter().zip(values).find_map(|(k, v)| {
            let t = *self.declared.partition_types.get(k)?;
            let v = v.as_deref()?;
            let fits = match t {
                PartitionType::String => true,
                PartitionType::Int64 => v.parse::<i64>().is_ok(),
                PartitionType::Date => layout::parse_date(v).is_some(),
                PartitionType::Timestamp => layout::parse_timestamp(v).is_some(),
            };
            (!fits).then_some((k, v, t))
        })
    }

    /// CSV: one header decision per table (kept from its first crawl), the majority's when
    /// new; files sampled the other way are read again the table's way.
    async fn csv_dialect(
        &self,
        store: &Arc<dyn ObjectStore>,
        files: &[&Candidate],
        reads: &mut Reads,
        format: FileFormat,
        sampling: Sampling,
    ) -> Dialect {
        let csv_samples: Vec<&text::TextSample> = reads
            .iter()
            .filter_map(|(_, r)| match r {
                Ok(FileRead::Text(t)) if t.format == FileFormat::Csv => Some(t),
                _ => None,
            })
            .collect();
        let has_header = sampling.header.unwrap_or_else(|| {
            csv_samples.iter().filter(|t| t.has_header).count() * 2 >= csv_samples.len()
        });
        let delimiter = self
            .properties
            .csv_dialect()
            .map(|(_, delimiter)| delimiter)
            .or_else(|| csv_samples.first().map(|t| t.delimiter))
            .unwrap_or(b',');
        if format == FileFormat::Csv && sampling.header.is_none() {
            for (i, read) in reads.iter_mut() {
                if let Ok(FileRead::Text(t)) = read
                    && t.format == FileFormat::Csv
                    && t.has_header != has_header
                {
                    let meta = &files[*i].meta;
                    *read = text::sample(
                        store.as_ref(),
                        &meta.location,
                        meta.size,
                        Some(FileFormat::Csv),
                        Some(has_header),
                        sampling.bytes,
                        sampling.rows,
                    )
                    .await
                    .map(FileRead::Text)
                    .map_err(ReadError::Sample);
                }
            }
        }
        Dialect {
            has_header,
            delimiter,
        }
    }

    /// Merges the schemas of the kept files and of those read into the table's, and makes
    /// the catalog entries of the files read; those that do not fit are reported.
    #[allow(clippy::too_many_arguments)]
    fn merge(
        &self,
        files: &[&Candidate],
        placed: &Placed<'_>,
        triage: &Triage,
        reads: Reads,
        format: FileFormat,
        dialect: &Dialect,
        summary: &mut CrawlSummary,
    ) -> (SchemaMerger, Vec<(usize, FileEntry)>) {
        let partition_names: BTreeSet<&str> = placed.keys.iter().map(String::as_str).collect();
        // CSV is read by position: a file whose header names the table's columns in
        // another order, skips one, or holds a partition column would put values under the
        // wrong names. Each new file's columns must be the table's first columns, in order;
        // others are left out before their columns count.
        let check_order =
            format == FileFormat::Csv && dialect.has_header && self.declared.schema.is_none();
        let existing_format = self
            .existing
            .as_ref()
            .and_then(|t| FileFormat::of_table(t.format));
        let mut merger = match (&self.declared.schema, &self.existing) {
            (Some(schema), _) => SchemaMerger::from_schema(schema),
            // A CSV table's columns are its files' (in their order), not those of files
            // that are gone.
            (None, Some(_)) if check_order => SchemaMerger::default(),
            (None, Some(t)) if placed.same_keys && existing_format == Some(format) => {
                SchemaMerger::from_schema(&t.file_schema)
            }
            _ => SchemaMerger::default(),
        };
        if format != FileFormat::Parquet {
            merger = merger.lenient();
        }
        let mut interner = Interner::default();
        let mut merged: std::collections::HashSet<usize> = std::collections::HashSet::new();
        for (_, f) in &triage.kept {
            // Unchanged files fitted this schema before; adding them only widens nullability.
            if merged.insert(Arc::as_ptr(&f.file_schema) as usize) {
                let _ = merger.add(&f.path, &without(&f.file_schema, &partition_names));
            }
        }
        let mut order: Vec<String> = if check_order {
            csv_column_order(&triage.kept, &reads, &partition_names)
        } else {
            Vec::new()
        };
        let mut new_entries: Vec<(usize, FileEntry)> = Vec::new();
        for (i, result) in reads {
            let c = files[i];
            let path = c.meta.location.to_string();
            if result.is_err()
                && let Some(old) = triage.restat.get(&i)
            {
                let _ = merger.add(&old.path, &without(&old.file_schema, &partition_names));
                new_entries.push((i, old.clone()));
                continue;
            }
            let Some(read) = usable_read(result, format, &self.qualified, path.clone(), summary)
            else {
                continue;
            };
            let (schema, row_count, footer_size, stats) = match read {
                FileRead::Parquet(footer) => (
                    footer.schema,
                    footer.row_count,
                    Some(footer.footer_size),
                    footer.stats,
                ),
                // Rows and statistics of text files are unknown until they are read.
                FileRead::Text(sample) => (
                    Arc::new(sample.schema),
                    0,
                    None,
                    crate::catalog::FileStats::new(),
                ),
            };
            let schema = interner.intern(schema);
            if check_order
                && let Some(message) =
                    csv_order_problem(&schema, &mut order, &partition_names, &self.qualified)
            {
                summary.problems.push(Problem { path, message });
                continue;
            }
            let key = Arc::as_ptr(&schema) as usize;
            if !merged.contains(&key) {
                let fitted = without(&schema, &partition_names);
                if let Err(conflict) = merger.add(&path, &fitted) {
                    summary.problems.push(Problem {
                        message: conflict.describe(&path),
                        path,
                    });
                    continue;
                }
                merged.insert(key);
            }
            let placement = &placed.placements[i];
            let partition_location = match placed.pinned[i] {
                Some(pin) => pin.path.clone(),
                None if placement.folder.is_empty() => self.table_path.to_string(),
                None => format!("{}/{}", self.table_path, placement.folder),
            };
            new_entries.push((
                i,
                FileEntry {
                    path,
                    size: c.meta.size,
                    e_tag: c.meta.e_tag.clone(),
                    last_modified: c.meta.last_modified,
                    row_count,
                    footer_size,
                    file_schema: schema,
                    stats,
                    stats_version: STATS_VERSION,
                    partition_values: placement.values.clone(),
                    partition_location,
                },
            ));
        }
        (merger, new_entries)
    }

    /// Partition types from every value of the files that stay in the table (declared
    /// ones win).
    fn partition_columns(
        &self,
        keys: &[String],
        kept: &[(usize, FileEntry)],
        new_entries: &[(usize, FileEntry)],
    ) -> Vec<PartitionColumn> {
        let included_values: Vec<&Vec<Option<String>>> = kept
            .iter()
            .map(|(_, f)| &f.partition_values)
            .chain(new_entries.iter().map(|(_, f)| &f.partition_values))
            .collect();
        keys.iter()
            .enumerate()
            .map(|(k, key)| PartitionColumn {
                name: key.clone(),
                data_type: self
                    .declared
                    .partition_types
                    .get(key)
                    .copied()
                    .unwrap_or_else(|| {
                        infer_partition_type(
                            included_values.iter().filter_map(|v| v.get(k)?.as_deref()),
                        )
                    }),
            })
            .collect()
    }

    /// Counts what changed in the summary; returns the catalogued files no longer there.
    fn count_changes(
        &self,
        triage: &Triage,
        new_entries: &[(usize, FileEntry)],
        summary: &mut CrawlSummary,
    ) -> Vec<String> {
        let kept_paths: BTreeSet<&str> = triage.kept.iter().map(|(_, f)| f.path.as_str()).collect();
        let new_paths: BTreeSet<&str> = new_entries.iter().map(|(_, f)| f.path.as_str()).collect();
        let removals: Vec<String> = self
            .old_files
            .iter()
            .filter(|(p, _)| !kept_paths.contains(p.as_str()) && !new_paths.contains(p.as_str()))
            // Written after the listing began (an ingest or a compaction committed while
            // this crawl ran): the listing cannot have seen it, so it is not gone.
            .filter(|(_, f)| summary.listed_at.is_none_or(|at| f.last_modified <= at))
            .map(|(p, _)| p.clone())
            .collect();
        for (i, f) in new_entries {
            match triage.restat.get(i) {
                // The same file, its entry kept because it could not be read again.
                Some(old) if old.stats_version == f.stats_version => summary.files_unchanged += 1,
                Some(_) => summary.files_restated += 1,
                None if self.old_files.contains_key(&f.path) => {
                    summary.files_changed += 1;
                    summary.bytes_added += f.size;
                }
                None => {
                    summary.files_added += 1;
                    summary.bytes_added += f.size;
                }
            }
        }
        summary.files_removed += removals.len() as u64;
        summary.files_unchanged += triage.kept.len() as u64;
        removals
    }

    /// The table's columns: those of the files it now holds (in the order they were first
    /// seen); columns only removed files had are dropped, as Glue's default "update the
    /// table definition" policy does. Types never narrow. A declared schema stands.
    fn table_schema(
        &self,
        merger: SchemaMerger,
        kept: &[(usize, FileEntry)],
        new_entries: &[(usize, FileEntry)],
    ) -> SchemaRef {
        let present: BTreeSet<&str> = kept
            .iter()
            .map(|(_, f)| &f.file_schema)
            .chain(new_entries.iter().map(|(_, f)| &f.file_schema))
            .flat_map(|s| s.fields().iter().map(|f| f.name().as_str()))
            .collect();
        let merged = merger.finish();
        if let Some(schema) = &self.declared.schema {
            Arc::clone(schema)
        } else if present.is_empty() {
            merged
        } else {
            Arc::new(Schema::new(
                merged
                    .fields()
                    .iter()
                    .filter(|f| present.contains(f.name().as_str()))
                    .cloned()
                    .collect::<Vec<_>>(),
            ))
        }
    }

    /// The schema to commit under `--schema-change`: the new one (update, or no change),
    /// the table's own (log), or `None` when nothing of the table may be committed (fail,
    /// or a CSV table whose columns changed order under log).
    fn schema_policy(
        &self,
        file_schema: SchemaRef,
        format: FileFormat,
        summary: &mut CrawlSummary,
    ) -> Option<SchemaRef> {
        let qualified = &self.qualified;
        let Some(table) = &self.existing else {
            return Some(file_schema);
        };
        if self.options.shape.schema_change == SchemaChangePolicy::Update
            || self.declared.schema.is_some()
        {
            return Some(file_schema);
        }
        let Some(change) = describe_schema_change(&table.file_schema, &file_schema) else {
            return Some(file_schema);
        };
        let refuse = |message: String, summary: &mut CrawlSummary| {
            summary.problems.push(Problem {
                path: self.table_url.to_string(),
                message,
            });
            summary.tables_unchanged.push(qualified.clone());
            None
        };
        match self.options.shape.schema_change {
            SchemaChangePolicy::Fail => refuse(
                format!(
                    "the schema of {qualified} changed ({change}); with --schema-change fail \
                     nothing of this table was committed; crawl with --schema-change update \
                     to accept the change"
                ),
                summary,
            ),
            // CSV files are read by position: the old columns over files in a new order
            // would put values under the wrong names.
            _ if format == FileFormat::Csv
                && reordered(&table.file_schema, &file_schema).is_some() =>
            {
                refuse(
                    format!(
                        "the columns of {qualified} changed order ({change}); CSV is read by \
                         position, so with --schema-change log nothing of this table was \
                         committed; crawl with --schema-change update to accept the new order"
                    ),
                    summary,
                )
            }
            _ => {
                summary.problems.push(Problem {
                    path: self.table_url.to_string(),
                    message: format!(
                        "the schema of {qualified} changed ({change}); with --schema-change \
                         log the table keeps its columns and the files are catalogued"
                    ),
                });
                Some(Arc::clone(&table.file_schema))
            }
        }
    }
}
