//! The catalog database, through sqlx's `Any` driver on one of two backends:
//! - SQLite (the embedded default), opened in WAL mode so a server and a crawl can share
//!   one data directory (many readers, one writer at a time, a busy timeout instead of an
//!   error when they meet);
//! - PostgreSQL, shared by several front ends: the same migrations in PostgreSQL's types
//!   (`migrations/postgres/`), and table commits that are optimistic (a commit that loses a
//!   race to another front end is run again on the new state).
//!
//! Statements are written once, in the SQL both accept (`$N` parameters, `ON CONFLICT`,
//! `RETURNING`); the few that differ (JSON properties, integrity checks) ask [`Backend`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow_ipc::convert::try_schema_from_flatbuffer_bytes;
use arrow_ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteOptions};
use arrow_schema::{Field, Schema, SchemaRef};
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::any::{AnyArguments, AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, Arguments, ConnectOptions, Row};

use super::model::*;
use crate::error::{Error, Result};

/// One migration: its version, name and SQL in SQLite's and in PostgreSQL's types.
macro_rules! migration {
    ($version:literal, $name:literal, $file:literal) => {
        (
            $version,
            $name,
            include_str!(concat!("../migrations/", $file)),
            include_str!(concat!("../migrations/postgres/", $file)),
        )
    };
}

/// Migrations of the catalog database, embedded in the binary (`catalog/migrations/`): one
/// list, each step written for both backends, so the two always hold the same tables.
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    migration!(1, "catalog", "0001_catalog.sql"),
    migration!(2, "crawlers", "0002_crawlers.sql"),
    migration!(3, "rollups", "0003_rollups.sql"),
    migration!(4, "deferred_deletes", "0004_deferred_deletes.sql"),
    migration!(5, "stats_version", "0005_stats_version.sql"),
    migration!(6, "rollup_errors", "0006_rollup_errors.sql"),
    migration!(7, "query_history", "0007_query_history.sql"),
    migration!(8, "query_statistics", "0008_query_statistics.sql"),
    migration!(9, "uncommitted_writes", "0009_uncommitted_writes.sql"),
    migration!(10, "views", "0010_views.sql"),
];

/// How many times a table commit that lost a race to another front end (PostgreSQL) is run
/// again on the new state before the conflict is reported.
const COMMIT_ATTEMPTS: usize = 8;

/// How long a writer that lost a commit race waits before its next attempt: doubling from
/// 4 ms with each attempt, at a random point of that span, so writers that keep colliding
/// drift apart instead of losing to each other in lockstep (under a second in all).
fn backoff(attempt: usize) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    let span_ms = 4u64 << attempt.min(6);
    // A fresh `RandomState` is randomly keyed: its hash of nothing is a random number.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    std::time::Duration::from_micros(random % (span_ms * 1000) + 1000)
}

/// How long a writer waits for another writer (a crawl beside a server) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// The database a catalog lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `catalog.db` in the data directory: the embedded default.
    Sqlite,
    /// A PostgreSQL database, which several front ends can share.
    Postgres,
}

/// Handle to the catalog database. Cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    pool: AnyPool,
    backend: Backend,
    /// Told of commits and finished crawls (shared by every clone).
    observer: Arc<std::sync::RwLock<Option<Observer>>>,
}

/// Something the catalog did that an operator measures.
#[derive(Debug, Clone, PartialEq)]
pub enum CatalogEvent {
    /// A table's changes were committed (one transaction), in this long.
    Committed(Duration),
    /// A crawl ended with `status` (`succeeded`, `failed`, …) after running this long.
    CrawlFinished { status: String, took: Duration },
}

/// A function told of [`CatalogEvent`]s (metrics).
pub type Observer = Arc<dyn Fn(CatalogEvent) + Send + Sync>;

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("backend", &self.backend)
            .field("pool", &self.pool)
            .finish()
    }
}

/// Rows per multi-row INSERT (10 parameters each, well under SQLite's limit).
const INSERT_CHUNK: usize = 500;

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Encodes a schema as an Arrow IPC schema message (the catalog's stored form).
pub fn encode_schema(schema: &Schema) -> Vec<u8> {
    let mut tracker = DictionaryTracker::new(false);
    IpcDataGenerator::default()
        .schema_to_bytes_with_dictionary_tracker(schema, &mut tracker, &IpcWriteOptions::default())
        .ipc_message
}

fn decode_schema(bytes: &[u8], what: impl Fn() -> String) -> Result<SchemaRef> {
    try_schema_from_flatbuffer_bytes(bytes)
        .map(Arc::new)
        .map_err(|e| Error::CatalogCorrupt {
            what: what(),
            reason: e.to_string(),
        })
}

/// Drops schema- and field-level metadata, so equal schemas encode to equal bytes.
pub fn strip_metadata(schema: &Schema) -> Schema {
    Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_metadata(HashMap::new()))
            .collect::<Vec<Field>>(),
    )
}

fn columns_text(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Catalog {
    /// Opens (creating if needed) the catalog in `data_dir/catalog.db` and applies the
    /// migrations.
    ///
    /// # Errors
    /// [`Error::Io`] when the directory cannot be created; [`Error::Catalog`] or
    /// [`Error::Migrate`] when the database cannot be opened or migrated.
    pub async fn open(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(|e| Error::io(data_dir, e))?;
        sqlx::any::install_default_drivers();
        // Absolute: the URL of a relative path would read its first folder as a host name.
        let file = data_dir.join("catalog.db");
        let file = std::path::absolute(&file).map_err(|e| Error::io(&file, e))?;
        let url = SqliteConnectOptions::new()
            .filename(file)
            .create_if_missing(true)
            .to_url_lossy();
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    for pragma in [
                        "PRAGMA journal_mode = WAL".to_owned(),
                        "PRAGMA synchronous = NORMAL".to_owned(),
                        format!("PRAGMA busy_timeout = {}", BUSY_TIMEOUT.as_millis()),
                        "PRAGMA foreign_keys = ON".to_owned(),
                    ] {
                        sqlx::query(pragma.as_str()).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(AnyConnectOptions::from_url(&url)?)
            .await?;
        Self::migrated(pool, Backend::Sqlite).await
    }

    /// Opens the catalog at `url`: a `postgres://` (or `postgresql://`) URL for a catalog
    /// several front ends share, a `sqlite://` URL or a directory for an embedded one; and
    /// applies the migrations (PostgreSQL's take an advisory lock, so front ends that start
    /// together migrate once).
    ///
    /// # Errors
    /// As [`Catalog::open`]; [`Error::InvalidArgument`] for a URL of another database.
    pub async fn connect(url: &str) -> Result<Self> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            return Self::open(Path::new(path)).await;
        }
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            if url.contains("://") {
                return Err(Error::InvalidArgument(format!(
                    "catalog URL '{}': Tarn keeps its catalog in PostgreSQL \
                     (postgres://user:password@host:port/database) or SQLite (a directory)",
                    redact_password(url)
                )));
            }
            return Self::open(Path::new(url)).await;
        }
        sqlx::any::install_default_drivers();
        let unreachable = |e: sqlx::Error| {
            Error::InvalidArgument(format!(
                "cannot reach the catalog at {}: {e}; check --catalog (TARN_CATALOG) and that \
                 the PostgreSQL server is up and accepts this user",
                redact_password(url)
            ))
        };
        // One connection first: a pool retries a refused connection until its timeout,
        // where a user wants the reason at once.
        {
            use sqlx::Connection;
            let probe = sqlx::AnyConnection::connect(url)
                .await
                .map_err(unreachable)?;
            probe.close().await.map_err(unreachable)?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect(url)
            .await
            .map_err(unreachable)?;
        Self::migrated(pool, Backend::Postgres).await
    }

    async fn migrated(pool: AnyPool, backend: Backend) -> Result<Self> {
        let migrator = Migrator {
            migrations: Cow::Owned(
                MIGRATIONS
                    .iter()
                    .map(|(v, d, sqlite, postgres)| {
                        let sql = match backend {
                            Backend::Sqlite => *sqlite,
                            Backend::Postgres => *postgres,
                        };
                        Migration::new(
                            *v,
                            Cow::Borrowed(*d),
                            MigrationType::Simple,
                            Cow::Borrowed(sql),
                            false,
                        )
                    })
                    .collect(),
            ),
            ..Migrator::DEFAULT
        };
        migrator.run(&pool).await?;
        Ok(Self {
            pool,
            backend,
            observer: Arc::default(),
        })
    }

    /// The database this catalog lives in.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A transaction that writes. On SQLite, `BEGIN IMMEDIATE` takes the write lock at
    /// once, waiting up to the busy timeout for another writer (a server's history, a crawl
    /// beside it). A deferred `BEGIN` that reads first and writes after fails at once with
    /// "database is locked" when another connection wrote in between: SQLite cannot turn
    /// that stale read snapshot into a write, and its busy timeout does not cover the case.
    /// PostgreSQL's row locks let writers of different rows go on side by side.
    async fn write_transaction(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// Tells `observer` of every commit and finished crawl from now on, through this handle
    /// and every clone of it.
    pub fn observe(&self, observer: Observer) {
        if let Ok(mut slot) = self.observer.write() {
            *slot = Some(observer);
        }
    }

    fn tell(&self, event: CatalogEvent) {
        if let Ok(slot) = self.observer.read()
            && let Some(observer) = slot.as_ref()
        {
            observer(event);
        }
    }

    /// The catalog's generation: it changes whenever anything a query sees changes.
    pub async fn generation(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT generation FROM catalog_state WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// All databases, by name.
    pub async fn databases(&self) -> Result<Vec<DatabaseEntry>> {
        let rows = sqlx::query("SELECT name, description FROM databases ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| DatabaseEntry {
                name: r.get(0),
                description: r.get(1),
            })
            .collect())
    }

    /// All tables with their current schema.
    pub async fn tables(&self) -> Result<Vec<TableEntry>> {
        self.query_tables(None).await
    }

    /// One table by database and name.
    pub async fn table(&self, database: &str, name: &str) -> Result<Option<TableEntry>> {
        Ok(self
            .query_tables(Some((database, name)))
            .await?
            .into_iter()
            .next())
    }

    async fn query_tables(&self, only: Option<(&str, &str)>) -> Result<Vec<TableEntry>> {
        let sql = format!(
            "SELECT t.id, d.name, t.name, t.location, t.format, t.partition_columns,
                    t.schema_version, t.version, t.updated_at, s.schema
             FROM tables t
             JOIN databases d ON d.id = t.database_id
             JOIN schema_versions s ON s.table_id = t.id AND s.version = t.schema_version
             {}
             ORDER BY d.name, t.name",
            if only.is_some() {
                "WHERE d.name = $1 AND t.name = $2"
            } else {
                ""
            }
        );
        let mut query = sqlx::query(&sql);
        if let Some((db, name)) = only {
            query = query.bind(db).bind(name);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|r| {
                let database: String = r.get(1);
                let name: String = r.get(2);
                let what = || format!("table {database}.{name}");
                let partition_columns: Vec<PartitionColumn> =
                    serde_json::from_str(r.get::<&str, _>(5)).map_err(|e| {
                        Error::CatalogCorrupt {
                            what: what(),
                            reason: format!("partition columns: {e}"),
                        }
                    })?;
                let format_name: &str = r.get(4);
                let format =
                    TableFormat::parse(format_name).ok_or_else(|| Error::CatalogCorrupt {
                        what: what(),
                        reason: format!("unknown table format '{format_name}'"),
                    })?;
                let file_schema = decode_schema(r.get::<&[u8], _>(9), what)?;
                Ok(TableEntry {
                    id: r.get(0),
                    database,
                    name,
                    location: r.get(3),
                    format,
                    partition_columns,
                    file_schema,
                    schema_version: r.get(6),
                    version: r.get(7),
                    updated_at: r.get(8),
                })
            })
            .collect()
    }

    /// Every schema version of a table, oldest first, as (version, columns text, created).
    pub async fn schema_history(&self, table_id: i64) -> Result<Vec<(i64, String, String)>> {
        let rows = sqlx::query(
            "SELECT version, columns, created_at FROM schema_versions
             WHERE table_id = $1 ORDER BY version",
        )
        .bind(table_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// The partitions of a table, ordered by location.
    pub async fn partitions(&self, table_id: i64) -> Result<Vec<PartitionEntry>> {
        let rows = sqlx::query(
            r#"SELECT "values", location, file_count, total_bytes, row_count
               FROM partitions WHERE table_id = $1 ORDER BY location"#,
        )
        .bind(table_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(PartitionEntry {
                    values: parse_values(r.get::<&str, _>(0), table_id)?,
                    location: r.get(1),
                    file_count: r.get(2),
                    total_bytes: r.get(3),
                    row_count: r.get(4),
                })
            })
            .collect()
    }

    /// Every table's files, rows, bytes and partitions, by table id (tables without files
    /// are left out).
    pub async fn table_sizes(&self) -> Result<HashMap<i64, TableSize>> {
        let rows = sqlx::query_as::<_, (i64, i64, i64, i64)>(
            "SELECT table_id, count(*), CAST(coalesce(sum(row_count), 0) AS BIGINT), \
                    CAST(coalesce(sum(size), 0) AS BIGINT) \
             FROM data_files GROUP BY table_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out: HashMap<i64, TableSize> = rows
            .into_iter()
            .map(|(id, files, rows, bytes)| {
                (
                    id,
                    TableSize {
                        files,
                        rows,
                        bytes,
                        partitions: 0,
                    },
                )
            })
            .collect();
        let partitions = sqlx::query_as::<_, (i64, i64)>(
            "SELECT table_id, count(*) FROM partitions GROUP BY table_id",
        )
        .fetch_all(&self.pool)
        .await?;
        for (id, n) in partitions {
            out.entry(id).or_default().partitions = n;
        }
        Ok(out)
    }

    /// Every file of a table with its schema, statistics and partition values.
    pub async fn files(&self, table_id: i64) -> Result<Vec<FileEntry>> {
        self.load_files(table_id, true).await
    }

    /// Every file of a table without its statistics: what a re-crawl needs to tell
    /// unchanged files apart, at a fraction of the cost.
    pub async fn file_index(&self, table_id: i64) -> Result<Vec<FileEntry>> {
        self.load_files(table_id, false).await
    }

    async fn load_files(&self, table_id: i64, with_stats: bool) -> Result<Vec<FileEntry>> {
        // Files share a handful of schemas and partitions: each is read and decoded once,
        // not once per file. One read transaction, so the three reads see one state.
        let mut tx = self.pool.begin().await?;
        let mut schemas: HashMap<i64, SchemaRef> = HashMap::new();
        for r in sqlx::query(
            "SELECT id, schema FROM file_schemas WHERE id IN
               (SELECT DISTINCT file_schema_id FROM data_files WHERE table_id = $1)",
        )
        .bind(table_id)
        .fetch_all(&mut *tx)
        .await?
        {
            let id: i64 = r.get(0);
            let schema = decode_schema(r.get::<&[u8], _>(1), || format!("file schema {id}"))?;
            schemas.insert(id, schema);
        }
        let mut partitions: HashMap<i64, (Vec<Option<String>>, String)> = HashMap::new();
        for r in sqlx::query(r#"SELECT id, "values", location FROM partitions WHERE table_id = $1"#)
            .bind(table_id)
            .fetch_all(&mut *tx)
            .await?
        {
            let values = parse_values(r.get::<&str, _>(1), table_id)?;
            partitions.insert(r.get(0), (values, r.get(2)));
        }
        let rows = sqlx::query(
            r#"SELECT f.path, f.size, f.e_tag, f.last_modified, f.row_count, f.footer_size,
                      f.file_schema_id, CASE WHEN $2 THEN f.stats ELSE '{}' END, f.partition_id,
                      f.stats_version
               FROM data_files f
               WHERE f.table_id = $1
               ORDER BY f.path"#,
        )
        .bind(table_id)
        .bind(with_stats)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut files = Vec::with_capacity(rows.len());
        for r in rows {
            let path: String = r.get(0);
            let corrupt = |reason: String| Error::CatalogCorrupt {
                what: format!("file {path}"),
                reason,
            };
            let schema_id: i64 = r.get(6);
            let file_schema = schemas
                .get(&schema_id)
                .cloned()
                .ok_or_else(|| corrupt(format!("no file schema {schema_id}")))?;
            let last_modified = DateTime::parse_from_rfc3339(r.get::<&str, _>(3))
                .map_err(|e| corrupt(format!("last_modified: {e}")))?
                .with_timezone(&Utc);
            let stats: FileStats = serde_json::from_str(r.get::<&str, _>(7))
                .map_err(|e| corrupt(format!("stats: {e}")))?;
            let (partition_values, partition_location) = r
                .get::<Option<i64>, _>(8)
                .and_then(|id| partitions.get(&id))
                .cloned()
                .unwrap_or_default();
            files.push(FileEntry {
                size: r.get::<i64, _>(1) as u64,
                e_tag: r.get(2),
                last_modified,
                row_count: r.get::<i64, _>(4) as u64,
                footer_size: r.get::<Option<i64>, _>(5).map(|v| v as u64),
                file_schema,
                stats,
                stats_version: r.get::<i64, _>(9),
                partition_values,
                partition_location,
                path,
            });
        }
        Ok(files)
    }

    /// Commits one table's crawl in a single transaction: the table row, a new schema
    /// version when the schema changed, partitions and files. A crash before the commit
    /// leaves the previous state untouched.
    ///
    /// On PostgreSQL it reads the table's version with the table's row locked (writers to
    /// one table take turns), and swaps it for the next only if it is still the one read;
    /// a commit that lost a race (two front ends creating the table, a deadlock) is rolled
    /// back and run again on the new state after a random wait (the commit names files, so
    /// applying it again is safe), up to [`COMMIT_ATTEMPTS`] times.
    ///
    /// # Errors
    /// [`Error::Catalog`] when the database rejects the write (nothing is applied);
    /// [`Error::Conflict`] when other writers won every attempt; [`Error::SchemaMoved`]
    /// when another writer changed the schema `commit` was merged onto.
    pub async fn commit_table(&self, commit: &TableCommit) -> Result<CommitOutcome> {
        let started = std::time::Instant::now();
        for attempt in 1..=COMMIT_ATTEMPTS {
            // Boxed: the transaction's state across its many awaits would otherwise sit on
            // the stack of every caller's future.
            match Box::pin(self.commit_table_in_one_transaction(commit)).await {
                Ok(Some(outcome)) => {
                    self.tell(CatalogEvent::Committed(started.elapsed()));
                    return Ok(outcome);
                }
                Ok(None) => {}
                Err(e) if lost_race(&e) => {}
                Err(e) => return Err(e),
            }
            tracing::debug!(
                table = %format!("{}.{}", commit.database, commit.name),
                attempt,
                "another writer committed to the table first; committing again"
            );
            if attempt < COMMIT_ATTEMPTS {
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
        Err(Error::Conflict(format!(
            "{}.{}: other writers committed to the table {COMMIT_ATTEMPTS} times while this \
             commit was tried; nothing of it was applied",
            commit.database, commit.name
        )))
    }

    /// One attempt at [`Catalog::commit_table`]: `None` when another writer committed to
    /// the table since this one read it (the transaction is rolled back).
    async fn commit_table_in_one_transaction(
        &self,
        commit: &TableCommit,
    ) -> Result<Option<CommitOutcome>> {
        // SQLite: one writer at a time. PostgreSQL: the table's row is locked when read
        // (below), so writers to one table commit one after the other, each reading what
        // the one before committed, instead of racing and starving the slower one; only
        // writers creating the same table at once race (one loses on the unique name).
        let mut tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
                    .await?
            }
        };
        let listed;
        let commit = match replaced_since_listing(&mut tx, commit).await? {
            Some(kept) => {
                listed = kept;
                &listed
            }
            None => commit,
        };
        let ts = now();
        sqlx::query(
            "INSERT INTO databases (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&commit.database)
        .bind(&ts)
        .execute(&mut *tx)
        .await?;
        let database_id: i64 = sqlx::query_scalar("SELECT id FROM databases WHERE name = $1")
            .bind(&commit.database)
            .fetch_one(&mut *tx)
            .await?;
        let partition_json = serde_json::to_string(&commit.partition_columns)
            .map_err(|e| Error::Internal(format!("partition columns to JSON: {e}")))?;
        let schema = strip_metadata(&commit.file_schema);
        let schema_bytes = encode_schema(&schema);

        let existing = sqlx::query(&format!(
            "SELECT t.id, t.schema_version, s.schema, t.partition_columns, t.location, t.format,
                    {}, t.version
             FROM tables t JOIN schema_versions s
               ON s.table_id = t.id AND s.version = t.schema_version
             WHERE t.database_id = $1 AND t.name = $2{}",
            self.backend.property("t.properties", "format_state"),
            match self.backend {
                Backend::Sqlite => "",
                Backend::Postgres => " FOR UPDATE OF t",
            }
        ))
        .bind(database_id)
        .bind(&commit.name)
        .fetch_optional(&mut *tx)
        .await?;
        let read_version: Option<i64> = existing.as_ref().map(|row| row.get(7));

        let mut outcome = CommitOutcome {
            created: false,
            new_schema_version: false,
            partitions_added: 0,
            partitions_removed: 0,
            changed: false,
        };
        let table = NewTableRow {
            schema: &schema,
            schema_bytes: &schema_bytes,
            partition_json: &partition_json,
            ts: &ts,
        };
        let table_id: i64 = match existing {
            Some(_) if commit.create_only => {
                return Err(Error::AlreadyExists(format!(
                    "table {}.{} already exists: another statement created it while this one \
                     ran; nothing was changed",
                    commit.database, commit.name
                )));
            }
            Some(row) => update_table_row(&mut tx, &row, commit, &table, &mut outcome).await?,
            None => {
                let id = insert_table_row(&mut tx, database_id, commit, &table).await?;
                outcome.created = true;
                outcome.new_schema_version = true;
                id
            }
        };

        set_commit_properties(&mut tx, self.backend, table_id, commit).await?;
        let mut touched = remove_files(&mut tx, table_id, commit, outcome.created).await?;
        let partition_ids = partition_ids(&mut tx, table_id, commit, &mut outcome).await?;
        upsert_files(
            &mut tx,
            self.backend,
            table_id,
            commit,
            &partition_ids,
            &mut touched,
        )
        .await?;
        release_written(&mut tx, commit).await?;

        if !commit.upserts.is_empty() || !commit.removals.is_empty() {
            outcome.partitions_removed += recount_partitions(&mut tx, table_id, touched).await?;
            outcome.changed = true;
        }
        outcome.changed |= outcome.created || outcome.new_schema_version;
        if commit.one_file_per_partition {
            let crowded: Option<String> = sqlx::query_scalar(
                "SELECT p.location FROM data_files f JOIN partitions p ON p.id = f.partition_id
                 WHERE f.table_id = $1 GROUP BY p.id, p.location HAVING count(*) > 1 LIMIT 1",
            )
            .bind(table_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(partition) = crowded {
                // Dropping the transaction rolls it back: nothing of this commit is kept.
                return Err(Error::Conflict(format!(
                    "{}.{}: partition '{partition}' was changed by another writer since it \
                     was read",
                    commit.database, commit.name
                )));
            }
        }
        if outcome.changed {
            // Compare and swap: a table whose version moved since it was read was committed
            // to by another writer, and this commit is run again on the new state (a guard:
            // the row lock above keeps the version from moving).
            let swapped = sqlx::query(
                "UPDATE tables SET version = version + 1, updated_at = $2
                 WHERE id = $1 AND ($3 IS NULL OR version = $3)",
            )
            .bind(table_id)
            .bind(&ts)
            .bind(read_version)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if swapped == 0 {
                return Ok(None);
            }
            bump_generation(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(Some(outcome))
    }

    /// Records the start of a crawl; returns its id.
    pub async fn begin_crawl(
        &self,
        location: &str,
        database: &str,
        crawler: Option<&str>,
    ) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO crawls (location, database, started_at, status, crawler)
             VALUES ($1, $2, $3, 'running', $4) RETURNING id",
        )
        .bind(location)
        .bind(database)
        .bind(now())
        .bind(crawler)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Records how a crawl ended, with its summary as JSON.
    pub async fn finish_crawl(&self, id: i64, status: &str, summary: &str) -> Result<()> {
        let started: Option<String> = sqlx::query_scalar(
            "UPDATE crawls SET finished_at = $2, status = $3, summary = $4 WHERE id = $1 \
             RETURNING started_at",
        )
        .bind(id)
        .bind(now())
        .bind(status)
        .bind(summary)
        .fetch_optional(&self.pool)
        .await?;
        let took = started
            .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
            .and_then(|s| (Utc::now() - s.with_timezone(&Utc)).to_std().ok());
        if let Some(took) = took {
            self.tell(CatalogEvent::CrawlFinished {
                status: status.to_string(),
                took,
            });
        }
        Ok(())
    }

    /// The most recent crawls, newest first.
    pub async fn crawl_history(&self, limit: i64) -> Result<Vec<CrawlRecord>> {
        self.crawl_history_of(None, limit).await
    }

    /// The most recent crawls (of one crawler, when named), newest first.
    pub async fn crawl_history_of(
        &self,
        crawler: Option<&str>,
        limit: i64,
    ) -> Result<Vec<CrawlRecord>> {
        let rows = sqlx::query(
            "SELECT id, location, database, started_at, finished_at, status, summary
             FROM crawls WHERE $2 IS NULL OR crawler = $2 ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .bind(crawler)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| CrawlRecord {
                id: r.get(0),
                location: r.get(1),
                database: r.get(2),
                started_at: r.get(3),
                finished_at: r.get(4),
                status: r.get(5),
                summary: r.get(6),
            })
            .collect())
    }

    /// The most recent crawls, newest first, as (id, location, status, summary JSON).
    pub async fn crawls(&self, limit: i64) -> Result<Vec<(i64, String, String, Option<String>)>> {
        let rows = sqlx::query(
            "SELECT id, location, status, summary FROM crawls ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }
    /// Stores a new crawler.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when a crawler of that name exists.
    pub async fn create_crawler(&self, crawler: &CrawlerDef) -> Result<()> {
        let options = serde_json::to_string(&crawler.options)
            .map_err(|e| Error::Internal(format!("crawler options to JSON: {e}")))?;
        let inserted = sqlx::query(
            "INSERT INTO crawlers (name, location, database, options, schedule, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(&crawler.name)
        .bind(&crawler.location)
        .bind(&crawler.database)
        .bind(options)
        .bind(&crawler.schedule)
        .bind(&crawler.created_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(Error::AlreadyExists(format!(
                "crawler '{}' already exists; drop it first to redefine it",
                crawler.name
            )));
        }
        Ok(())
    }

    /// Every crawler, by name.
    pub async fn crawlers(&self) -> Result<Vec<CrawlerDef>> {
        let rows = sqlx::query(
            "SELECT name, location, database, options, schedule, created_at, last_started_at
             FROM crawlers ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let name: String = r.get(0);
                let options: String = r.get(3);
                Ok(CrawlerDef {
                    options: serde_json::from_str(&options).map_err(|e| Error::CatalogCorrupt {
                        what: format!("crawler '{name}'"),
                        reason: e.to_string(),
                    })?,
                    name,
                    location: r.get(1),
                    database: r.get(2),
                    schedule: r.get(4),
                    created_at: r.get(5),
                    last_started_at: r.get(6),
                })
            })
            .collect()
    }

    /// One crawler.
    pub async fn crawler(&self, name: &str) -> Result<Option<CrawlerDef>> {
        Ok(self.crawlers().await?.into_iter().find(|c| c.name == name))
    }

    /// Forgets a crawler (its crawls stay in the history). Returns whether it existed.
    pub async fn drop_crawler(&self, name: &str) -> Result<bool> {
        let dropped = sqlx::query("DELETE FROM crawlers WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?
            .rows_affected()
            > 0;
        Ok(dropped)
    }

    /// Records that a crawler started at `at` (RFC 3339), so its schedule moves on.
    pub async fn crawler_started(&self, name: &str, at: &str) -> Result<()> {
        sqlx::query("UPDATE crawlers SET last_started_at = $2 WHERE name = $1")
            .bind(name)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Claims a scheduled run of a crawler: records `at` as its start only if its last
    /// start is still `seen` (what the caller read when it found the run due). Returns
    /// whether this caller won the claim; with front ends sharing a catalog, one runs the
    /// crawl and the others see its new start and skip it.
    pub async fn claim_crawler_run(
        &self,
        name: &str,
        seen: Option<&str>,
        at: &str,
    ) -> Result<bool> {
        let claimed = sqlx::query(
            "UPDATE crawlers SET last_started_at = $2
             WHERE name = $1
               AND (last_started_at = $3 OR (last_started_at IS NULL AND $3 IS NULL))",
        )
        .bind(name)
        .bind(at)
        .bind(seen)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(claimed == 1)
    }

    /// Stores a rollup's definition (its rows come with its first refresh).
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when the database has a rollup of that name;
    /// [`Error::InvalidArgument`] when the database does not exist.
    pub async fn create_rollup(&self, rollup: &RollupDef) -> Result<()> {
        let definition = serde_json::to_string(rollup)
            .map_err(|e| Error::Internal(format!("rollup definition to JSON: {e}")))?;
        let mut tx = self.write_transaction().await?;
        let database_id = existing_database(&mut tx, &rollup.database).await?;
        let inserted = sqlx::query(
            "INSERT INTO rollups (database_id, name, definition, created_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(database_id)
        .bind(&rollup.name)
        .bind(definition)
        .bind(now())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(Error::AlreadyExists(format!(
                "materialized view '{}.{}' already exists; DROP MATERIALIZED VIEW it first to \
                 redefine it",
                rollup.database, rollup.name
            )));
        }
        bump_generation(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every rollup, by database and name.
    pub async fn rollups(&self) -> Result<Vec<RollupRecord>> {
        let rows = sqlx::query(
            "SELECT d.name, r.name, r.definition, r.created_at, r.refreshed_at, r.last_error,
                    r.last_error_at
             FROM rollups r JOIN databases d ON d.id = r.database_id
             ORDER BY d.name, r.name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let database: String = r.get(0);
                let name: String = r.get(1);
                let definition: String = r.get(2);
                Ok(RollupRecord {
                    definition: stored_json(&definition, || {
                        format!("materialized view '{database}.{name}'")
                    })?,
                    created_at: r.get(3),
                    refreshed_at: r.get(4),
                    last_error: r.get(5),
                    last_error_at: r.get(6),
                })
            })
            .collect()
    }

    /// Records that a rollup finished a refresh at `at` (RFC 3339), clearing the error of
    /// an earlier failed one (a change readers must see: the view answers queries again).
    pub async fn rollup_refreshed(&self, database: &str, name: &str, at: &str) -> Result<()> {
        let mut tx = self.write_transaction().await?;
        let repaired = sqlx::query(
            "UPDATE rollups SET last_error = NULL, last_error_at = NULL WHERE name = $2
               AND database_id = (SELECT id FROM databases WHERE name = $1)
               AND last_error IS NOT NULL",
        )
        .bind(database)
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "UPDATE rollups SET refreshed_at = $3 WHERE name = $2
               AND database_id = (SELECT id FROM databases WHERE name = $1)",
        )
        .bind(database)
        .bind(name)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        if repaired > 0 {
            bump_generation(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records that a refresh of a rollup failed at `at` (RFC 3339) with `error`. Until a
    /// refresh succeeds, queries are answered from the base (readers see the change at
    /// their next catalog refresh).
    pub async fn rollup_failed(
        &self,
        database: &str,
        name: &str,
        at: &str,
        error: &str,
    ) -> Result<()> {
        let mut tx = self.write_transaction().await?;
        sqlx::query(
            "UPDATE rollups SET last_error = $3, last_error_at = $4 WHERE name = $2
               AND database_id = (SELECT id FROM databases WHERE name = $1)",
        )
        .bind(database)
        .bind(name)
        .bind(error)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        bump_generation(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The partitions of Parquet tables holding at least `min_files` files smaller than
    /// `below_bytes` (candidates for compaction): `(database, table, partition location)`.
    pub async fn crowded_partitions(
        &self,
        below_bytes: u64,
        min_files: u64,
    ) -> Result<Vec<(String, String, String)>> {
        let rows = sqlx::query_as::<_, (String, String, String)>(
            "SELECT d.name, t.name, p.location
             FROM data_files f
               JOIN partitions p ON p.id = f.partition_id
               JOIN tables t ON t.id = f.table_id
               JOIN databases d ON d.id = t.database_id
             WHERE f.size < $1 AND t.format = 'parquet'
             GROUP BY d.name, t.name, p.location
             HAVING count(*) >= $2
             ORDER BY d.name, t.name, p.location",
        )
        .bind(i64::try_from(below_bytes).unwrap_or(i64::MAX))
        .bind(i64::try_from(min_files).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Schedules the deletion of `paths` (objects of the table at `location`) at `due_at`
    /// (RFC 3339, UTC).
    pub async fn defer_deletes(
        &self,
        location: &str,
        paths: &[String],
        due_at: &str,
    ) -> Result<()> {
        let mut tx = self.write_transaction().await?;
        for path in paths {
            sqlx::query(
                "INSERT INTO deferred_deletes (location, path, due_at) VALUES ($1, $2, $3)",
            )
            .bind(location)
            .bind(path)
            .bind(due_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletions due at `now` (RFC 3339, UTC): `(id, location, path, catalogued)`, where
    /// `catalogued` says a table at that location references the file (then it must stay:
    /// only the row is forgotten).
    pub async fn due_deletes(&self, now: &str) -> Result<Vec<(i64, String, String, bool)>> {
        let rows = sqlx::query_as::<_, (i64, String, String, i64)>(
            "SELECT d.id, d.location, d.path,
                    CASE WHEN EXISTS (SELECT 1 FROM data_files f JOIN tables t ON t.id = f.table_id
                                      WHERE t.location = d.location AND f.path = d.path)
                         THEN 1 ELSE 0 END
             FROM deferred_deletes d WHERE d.due_at <= $1 ORDER BY d.id",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, location, path, catalogued)| (id, location, path, catalogued != 0))
            .collect())
    }

    /// Records a statement in the query history, and forgets those submitted before
    /// `forget_before` (RFC 3339).
    pub async fn record_query(&self, q: &QueryRecord, forget_before: Option<&str>) -> Result<()> {
        self.record_queries(std::slice::from_ref(q), forget_before)
            .await
    }

    /// Records statements in the query history in one transaction; with `forget_before`,
    /// also removes the records submitted before it.
    pub async fn record_queries(
        &self,
        records: &[QueryRecord],
        forget_before: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.write_transaction().await?;
        for q in records {
            let s = &q.stats;
            sqlx::query(&format!(
                "INSERT INTO query_history ({QUERY_COLUMNS}) VALUES ({}) \
                     ON CONFLICT (query_id) DO UPDATE SET {}",
                (1..=QUERY_COLUMN_COUNT)
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                QUERY_COLUMNS
                    .split(", ")
                    .skip(1)
                    .map(|c| format!("{c} = excluded.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .bind(&q.query_id)
            .bind(&q.user)
            .bind(&q.database)
            .bind(&q.sql)
            .bind(&q.state)
            .bind(&q.submitted_at)
            .bind(q.queued_ms)
            .bind(q.execution_ms)
            .bind(q.rows)
            .bind(&q.error)
            .bind(&s.front_door)
            .bind(s.planning_ms)
            .bind(s.bytes_returned)
            .bind(s.bytes_scanned)
            .bind(s.files_scanned)
            .bind(s.partitions_scanned)
            .bind(s.partitions_pruned)
            .bind(&s.materialized_view)
            .bind(i64::from(s.result_cache_hit))
            .bind(s.peak_memory_bytes)
            .bind(s.spilled_bytes)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(before) = forget_before {
            sqlx::query("DELETE FROM query_history WHERE submitted_at < $1")
                .bind(before)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The query history, newest first: every user's, or `user`'s only.
    pub async fn query_history(&self, user: Option<&str>, limit: i64) -> Result<Vec<QueryRecord>> {
        let sql = format!(
            "SELECT {QUERY_COLUMNS} FROM query_history \
             WHERE ($1 IS NULL OR user_name = $1) ORDER BY submitted_at DESC, query_id LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(user)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(query_record).collect()
    }

    /// The history's record of statement `query_id`, if it has one.
    pub async fn query_record(&self, query_id: &str) -> Result<Option<QueryRecord>> {
        let sql = format!("SELECT {QUERY_COLUMNS} FROM query_history WHERE query_id = $1");
        let row = sqlx::query(&sql)
            .bind(query_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(query_record).transpose()
    }

    /// Checks the catalog database: SQLite's own integrity and foreign-key checks, then
    /// Tarn's invariants: each table's current schema version exists, each partition's
    /// file, row and byte counts are its files', and each file's partition is of its
    /// table. Returns one sentence per problem; none when all hold.
    ///
    /// # Errors
    /// When the database cannot be read at all.
    pub async fn check(&self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        // PostgreSQL keeps its own pages and foreign keys whole; SQLite is asked.
        if self.backend == Backend::Sqlite {
            let integrity: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
                .fetch_all(&self.pool)
                .await?;
            problems.extend(
                integrity
                    .into_iter()
                    .filter(|line| line != "ok")
                    .map(|line| format!("SQLite integrity check: {line}")),
            );
            let dangling = sqlx::query_as::<_, (String, i64, String)>(
                "SELECT \"table\", rowid, parent FROM pragma_foreign_key_check",
            )
            .fetch_all(&self.pool)
            .await?;
            problems.extend(dangling.into_iter().map(|(table, row, parent)| {
                format!("row {row} of {table} refers to a row of {parent} that does not exist")
            }));
        }
        let invariants: [(&str, &str); 3] = [
            (
                "SELECT d.name || '.' || t.name FROM tables t JOIN databases d ON d.id = t.database_id
                 WHERE NOT EXISTS (SELECT 1 FROM schema_versions s
                                   WHERE s.table_id = t.id AND s.version = t.schema_version)",
                "has no row for its current schema version",
            ),
            (
                "SELECT d.name || '.' || t.name || ' partition ' || p.location
                 FROM partitions p JOIN tables t ON t.id = p.table_id
                 JOIN databases d ON d.id = t.database_id
                 WHERE p.file_count <> (SELECT count(*) FROM data_files f
                                        WHERE f.partition_id = p.id)
                    OR p.row_count <> (SELECT coalesce(sum(f.row_count), 0) FROM data_files f
                                       WHERE f.partition_id = p.id)
                    OR p.total_bytes <> (SELECT coalesce(sum(f.size), 0) FROM data_files f
                                         WHERE f.partition_id = p.id)",
                "counts files, rows or bytes its files do not add up to",
            ),
            (
                "SELECT f.path FROM data_files f JOIN partitions p ON p.id = f.partition_id
                 WHERE p.table_id <> f.table_id",
                "is recorded in a partition of another table",
            ),
        ];
        for (query, problem) in invariants {
            let found: Vec<String> = sqlx::query_scalar(query).fetch_all(&self.pool).await?;
            problems.extend(found.into_iter().map(|what| format!("{what} {problem}")));
        }
        Ok(problems)
    }

    /// Every deletion waiting for its time: `(location, path)`.
    pub async fn pending_deletes(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query_as::<_, (String, String)>(
            "SELECT location, path FROM deferred_deletes ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Forgets deletions that were carried out.
    pub async fn forget_deletes(&self, ids: &[i64]) -> Result<()> {
        let mut tx = self.write_transaction().await?;
        for id in ids {
            sqlx::query("DELETE FROM deferred_deletes WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Forgets a rollup and its storage table (the caller deletes the files). Returns
    /// whether it existed.
    pub async fn drop_rollup(&self, database: &str, name: &str, storage: &str) -> Result<bool> {
        let mut tx = self.write_transaction().await?;
        let deleted = delete_named(&mut tx, Named::Rollup, database, name).await?;
        delete_named(&mut tx, Named::Table, database, storage).await?;
        if deleted > 0 {
            bump_generation(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(deleted > 0)
    }

    /// Stores a view, or replaces one of that name when `or_replace`. Returns false when
    /// it existed and `if_not_exists` kept it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the database does not exist, or a table or a
    /// materialized view has the name; [`Error::AlreadyExists`] when a view has it and
    /// neither `or_replace` nor `if_not_exists` is given.
    pub async fn create_view(
        &self,
        view: &ViewDef,
        or_replace: bool,
        if_not_exists: bool,
    ) -> Result<bool> {
        let columns = serde_json::to_string(&view.columns)
            .map_err(|e| Error::Internal(format!("view columns to JSON: {e}")))?;
        let mut tx = self.write_transaction().await?;
        let database_id = existing_database(&mut tx, &view.database).await?;
        let taken: Option<String> = sqlx::query_scalar(
            "SELECT 'a table' FROM tables WHERE database_id = $1 AND name = $2
             UNION ALL SELECT 'a materialized view' FROM rollups
              WHERE database_id = $1 AND name = $2",
        )
        .bind(database_id)
        .bind(&view.name)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(kind) = taken {
            return Err(Error::InvalidArgument(format!(
                "'{}.{}' is already {kind}; choose another name for the view",
                view.database, view.name
            )));
        }
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT id FROM views WHERE database_id = $1 AND name = $2")
                .bind(database_id)
                .bind(&view.name)
                .fetch_optional(&mut *tx)
                .await?;
        let at = now();
        match (exists, or_replace, if_not_exists) {
            (Some(_), false, true) => return Ok(false),
            (Some(_), false, false) => {
                return Err(Error::AlreadyExists(format!(
                    "view '{}.{}' already exists; use CREATE OR REPLACE VIEW to redefine it",
                    view.database, view.name
                )));
            }
            (Some(id), true, _) => {
                sqlx::query(
                    "UPDATE views SET query = $2, columns = $3, updated_at = $4, resolve_in = $5
                     WHERE id = $1",
                )
                .bind(id)
                .bind(&view.query)
                .bind(&columns)
                .bind(&at)
                .bind(&view.resolve_in)
                .execute(&mut *tx)
                .await?;
            }
            (None, _, _) => {
                sqlx::query(
                    "INSERT INTO views
                       (database_id, name, query, columns, created_at, updated_at, resolve_in)
                     VALUES ($1, $2, $3, $4, $5, $5, $6)",
                )
                .bind(database_id)
                .bind(&view.name)
                .bind(&view.query)
                .bind(&columns)
                .bind(&at)
                .bind(&view.resolve_in)
                .execute(&mut *tx)
                .await?;
            }
        }
        bump_generation(&mut tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Every view, by database and name.
    pub async fn views(&self) -> Result<Vec<ViewRecord>> {
        let rows = sqlx::query(
            "SELECT d.name, v.name, v.query, v.columns, v.created_at, v.updated_at, v.resolve_in
             FROM views v JOIN databases d ON d.id = v.database_id
             ORDER BY d.name, v.name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let database: String = r.get(0);
                let name: String = r.get(1);
                let columns: String = r.get(3);
                let columns = stored_json(&columns, || format!("view '{database}.{name}'"))?;
                Ok(ViewRecord {
                    definition: ViewDef {
                        database,
                        name,
                        query: r.get(2),
                        resolve_in: r.get(6),
                        columns,
                    },
                    created_at: r.get(4),
                    updated_at: r.get(5),
                })
            })
            .collect()
    }

    /// Drops a view; false when there was none of that name.
    pub async fn drop_view(&self, database: &str, name: &str) -> Result<bool> {
        let mut tx = self.write_transaction().await?;
        let deleted = delete_named(&mut tx, Named::View, database, name).await?;
        if deleted > 0 {
            bump_generation(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(deleted > 0)
    }

    /// Creates a database. Returns false when it already existed and `if_not_exists`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when it exists and `if_not_exists` is false.
    pub async fn create_database(&self, name: &str, if_not_exists: bool) -> Result<bool> {
        let mut tx = self.write_transaction().await?;
        let inserted = sqlx::query(
            "INSERT INTO databases (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(now())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !inserted {
            if if_not_exists {
                return Ok(false);
            }
            return Err(Error::InvalidArgument(format!(
                "database '{name}' already exists; use CREATE DATABASE IF NOT EXISTS to ignore this"
            )));
        }
        bump_generation(&mut tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Drops a database; with `cascade` its tables go too (their files stay in the lake).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `default`, for a database that still has tables
    /// without `cascade`, or one that does not exist without `if_exists`.
    pub async fn drop_database(&self, name: &str, if_exists: bool, cascade: bool) -> Result<bool> {
        if name == "default" {
            return Err(Error::InvalidArgument(
                "the database 'default' cannot be dropped".into(),
            ));
        }
        let mut tx = self.write_transaction().await?;
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM databases WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(id) = id else {
            if if_exists {
                return Ok(false);
            }
            return Err(Error::InvalidArgument(format!(
                "database '{name}' does not exist"
            )));
        };
        let tables: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM tables WHERE database_id = $1)
                  + (SELECT count(*) FROM views WHERE database_id = $1)",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        if tables > 0 && !cascade {
            return Err(Error::InvalidArgument(format!(
                "database '{name}' has {tables} table(s) or view(s); drop them first or use DROP DATABASE {name} CASCADE"
            )));
        }
        sqlx::query("DELETE FROM databases WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        bump_generation(&mut tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Removes a table from the catalog (its files stay in the lake). Returns whether it
    /// existed.
    pub async fn drop_table(&self, database: &str, name: &str) -> Result<bool> {
        let mut tx = self.write_transaction().await?;
        let deleted = delete_named(&mut tx, Named::Table, database, name).await?;
        if deleted > 0 {
            bump_generation(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(deleted > 0)
    }

    /// A table's properties.
    ///
    /// # Errors
    /// [`Error::CatalogCorrupt`] naming the table when they do not decode.
    pub async fn table_properties(&self, table_id: i64) -> Result<TableProperties> {
        let (text, name): (String, String) = sqlx::query_as(
            "SELECT t.properties, d.name || '.' || t.name
             FROM tables t JOIN databases d ON d.id = t.database_id WHERE t.id = $1",
        )
        .bind(table_id)
        .fetch_one(&self.pool)
        .await?;
        serde_json::from_str(&text).map_err(|e| Error::CatalogCorrupt {
            what: format!("properties of table {name}"),
            reason: e.to_string(),
        })
    }

    /// By table id, the newest log sequence number of the write-ahead log `log` that each
    /// table's files hold (see [`TableProperties::stream`]), in one query.
    ///
    /// # Errors
    /// [`Error::CatalogCorrupt`] when a table's stream positions do not decode.
    pub async fn stream_positions(&self, log: &str) -> Result<HashMap<i64, u64>> {
        let stream = self.backend.property("t.properties", "stream");
        let rows: Vec<(i64, String, String)> = sqlx::query_as(&format!(
            "SELECT t.id, d.name || '.' || t.name, {stream}
             FROM tables t JOIN databases d ON d.id = t.database_id
             WHERE {stream} IS NOT NULL"
        ))
        .fetch_all(&self.pool)
        .await?;
        let mut positions = HashMap::new();
        for (id, name, text) in rows {
            let by_log: std::collections::BTreeMap<String, u64> = serde_json::from_str(&text)
                .map_err(|e| Error::CatalogCorrupt {
                    what: format!("stream positions of table {name}"),
                    reason: e.to_string(),
                })?;
            if let Some(lsn) = by_log.get(log) {
                positions.insert(id, *lsn);
            }
        }
        Ok(positions)
    }

    /// The tables with pinned partitions, with them, in one query (a crawl asks on every
    /// run, so not one query per table).
    pub async fn tables_with_pinned_partitions(&self) -> Result<Vec<(i64, Vec<PinnedPartition>)>> {
        let pinned = self.backend.property("t.properties", "partition_locations");
        let rows: Vec<(i64, String, String)> = sqlx::query_as(&format!(
            "SELECT t.id, d.name || '.' || t.name, {pinned}
             FROM tables t JOIN databases d ON d.id = t.database_id
             WHERE {pinned} IS NOT NULL"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, name, text)| {
                serde_json::from_str(&text)
                    .map(|value| (id, value))
                    .map_err(|e| Error::CatalogCorrupt {
                        what: format!("pinned partitions (partition_locations) of table {name}"),
                        reason: e.to_string(),
                    })
            })
            .collect()
    }

    /// Marks a table deprecated, with the reason (its folder is gone), or ends the mark.
    /// Either is a new table version, so servers reload what they read.
    pub async fn set_deprecated(&self, table_id: i64, reason: Option<&str>) -> Result<()> {
        let mut tx = self.write_transaction().await?;
        // The reason as a JSON string: both backends set a property from JSON text.
        let reason = reason
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| Error::Internal(format!("deprecation reason to JSON: {e}")))?;
        sqlx::query(&format!(
            "UPDATE tables SET
               properties = CASE WHEN $2 IS NULL THEN {}
                                 ELSE {} END,
               version = version + 1, updated_at = $3
             WHERE id = $1",
            self.backend.remove_property("properties", "deprecated"),
            self.backend
                .set_property("properties", "'deprecated'", "$2"),
        ))
        .bind(table_id)
        .bind(reason)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        bump_generation(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets a table's pinned partitions, leaving its other properties as they are now (a
    /// crawl committing at the same time keeps what it wrote).
    pub async fn set_pinned_partitions(
        &self,
        table_id: i64,
        pinned: &[PinnedPartition],
    ) -> Result<()> {
        let value = serde_json::to_string(pinned)
            .map_err(|e| Error::Internal(format!("pinned partitions to JSON: {e}")))?;
        sqlx::query(&format!(
            "UPDATE tables SET properties = CASE WHEN $2 = '[]' THEN {} ELSE {} END
             WHERE id = $1",
            self.backend
                .remove_property("properties", "partition_locations"),
            self.backend
                .set_property("properties", "'partition_locations'", "$2"),
        ))
        .bind(table_id)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes the partition with exactly these values, and its files, from the catalog
    /// (the files stay in the lake). Returns how many files were removed.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the table has no such partition.
    pub async fn drop_partition(&self, table_id: i64, values: &[Option<String>]) -> Result<u64> {
        let json = serde_json::to_string(values)
            .map_err(|e| Error::Internal(format!("partition values to JSON: {e}")))?;
        let mut tx = self.write_transaction().await?;
        let ids: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM partitions WHERE table_id = $1 AND \"values\" = $2")
                .bind(table_id)
                .bind(&json)
                .fetch_all(&mut *tx)
                .await?;
        if ids.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "the table has no partition {json}"
            )));
        }
        let mut files = 0;
        for id in ids {
            files += sqlx::query("DELETE FROM data_files WHERE partition_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("DELETE FROM partitions WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("UPDATE tables SET version = version + 1, updated_at = $2 WHERE id = $1")
            .bind(table_id)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        bump_generation(&mut tx).await?;
        tx.commit().await?;
        Ok(files)
    }
}

/// One recorded crawl.
#[derive(Debug, Clone)]
pub struct CrawlRecord {
    pub id: i64,
    pub location: String,
    pub database: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    /// The crawl summary (or error) as JSON.
    pub summary: Option<String>,
}

/// Catalog objects named within a database.
enum Named {
    Table,
    Rollup,
    View,
}

/// Deletes the object `database.name` of a kind; returns how many rows went.
async fn delete_named(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    kind: Named,
    database: &str,
    name: &str,
) -> Result<u64> {
    let sql = match kind {
        Named::Table => {
            "DELETE FROM tables WHERE name = $2
               AND database_id = (SELECT id FROM databases WHERE name = $1)"
        }
        Named::Rollup => {
            "DELETE FROM rollups WHERE name = $2
               AND database_id = (SELECT id FROM databases WHERE name = $1)"
        }
        Named::View => {
            "DELETE FROM views WHERE name = $2
               AND database_id = (SELECT id FROM databases WHERE name = $1)"
        }
    };
    Ok(sqlx::query(sql)
        .bind(database)
        .bind(name)
        .execute(&mut **tx)
        .await?
        .rows_affected())
}

/// A definition the catalog keeps as JSON; damage names `what` it belongs to.
fn stored_json<T: serde::de::DeserializeOwned>(
    text: &str,
    what: impl FnOnce() -> String,
) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::CatalogCorrupt {
        what: what(),
        reason: e.to_string(),
    })
}

/// The id of the database `name`, which a definition is about to go into.
///
/// # Errors
/// [`Error::InvalidArgument`] when there is no such database.
async fn existing_database(tx: &mut sqlx::Transaction<'_, sqlx::Any>, name: &str) -> Result<i64> {
    let id: Option<i64> = sqlx::query_scalar("SELECT id FROM databases WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?;
    id.ok_or_else(|| {
        Error::InvalidArgument(format!(
            "database '{name}' does not exist; CREATE DATABASE it first"
        ))
    })
}

async fn bump_generation(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<()> {
    sqlx::query("UPDATE catalog_state SET generation = generation + 1 WHERE id = 1")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// `url` with its password, if any, replaced by `***` (for messages and logs).
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// Whether `e` is a commit that lost a race to another writer (PostgreSQL: a
/// serialization failure, a deadlock, or a row another front end inserted first), so that
/// running it again on the new state will do.
fn lost_race(e: &Error) -> bool {
    match e {
        Error::Catalog(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("40001" | "40P01" | "23505"))
        }
        _ => false,
    }
}

impl Backend {
    /// SQL for the JSON text of the property `key` of the JSON object in `column` (NULL
    /// when it has none).
    fn property(self, column: &str, key: &str) -> String {
        match self {
            Backend::Sqlite => format!("CAST(json_extract({column}, '$.{key}') AS TEXT)"),
            Backend::Postgres => format!("(({column})::jsonb -> '{key}')::text"),
        }
    }

    /// SQL for the JSON object in `column` with the property named by the parameter `key`
    /// set to the JSON text in the parameter `json`.
    fn set_property(self, column: &str, key: &str, json: &str) -> String {
        match self {
            Backend::Sqlite => format!("json_set({column}, '$.' || {key}, json({json}))"),
            Backend::Postgres => {
                format!("jsonb_set(({column})::jsonb, ARRAY[{key}::text], ({json})::jsonb)::text")
            }
        }
    }

    /// SQL for the JSON object in `column` without the property `key`.
    fn remove_property(self, column: &str, key: &str) -> String {
        match self {
            Backend::Sqlite => format!("json_remove({column}, '$.{key}')"),
            Backend::Postgres => format!("(({column})::jsonb - '{key}')::text"),
        }
    }
}

fn parse_values(json: &str, table_id: i64) -> Result<Vec<Option<String>>> {
    serde_json::from_str(json).map_err(|e| Error::CatalogCorrupt {
        what: format!("partition of table id {table_id}"),
        reason: e.to_string(),
    })
}

/// `{head}{table_id} AND {column} IN (values){tail}`: a statement on one table's rows
/// named by a list (callers cut lists to `INSERT_CHUNK`).
fn rows_in<'a, T>(
    head: &str,
    table_id: i64,
    column: &str,
    values: impl IntoIterator<Item = T>,
    tail: &str,
) -> Statement<'a>
where
    T: 'a + sqlx::Encode<'a, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    let mut query = Statement::new(head);
    query.bind(table_id).push(&format!(" AND {column} IN ("));
    query.bind_list(values);
    query.push(")").push(tail);
    query
}

/// A statement put together from SQL text and bound values, numbered `$1, $2, …` as both
/// backends read them (sqlx's `QueryBuilder` numbers none for the `Any` driver, which
/// PostgreSQL cannot read).
struct Statement<'q> {
    sql: String,
    args: AnyArguments<'q>,
    count: usize,
    /// Rows of a `VALUES` list so far, and whether the current one has a value yet.
    rows: usize,
    row_started: bool,
    /// The first value that did not encode: reported when the statement runs.
    error: Option<String>,
}

impl<'q> Statement<'q> {
    fn new(head: &str) -> Self {
        Self {
            sql: head.to_owned(),
            args: AnyArguments::default(),
            count: 0,
            rows: 0,
            row_started: false,
            error: None,
        }
    }

    fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Binds `value` as the next parameter, written where the text has got to.
    fn bind<T>(&mut self, value: T) -> &mut Self
    where
        T: 'q + sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        if let Err(e) = self.args.add(value) {
            self.error.get_or_insert_with(|| e.to_string());
        }
        self.count += 1;
        self.sql.push_str(&format!("${}", self.count));
        self
    }

    /// Binds each value, separated by commas.
    fn bind_list<T>(&mut self, values: impl IntoIterator<Item = T>) -> &mut Self
    where
        T: 'q + sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.sql.push_str(", ");
            }
            self.bind(value);
        }
        self
    }

    /// Starts the next row of a `VALUES` list.
    fn row(&mut self) -> &mut Self {
        self.sql
            .push_str(if self.rows == 0 { " VALUES (" } else { "), (" });
        self.rows += 1;
        self.row_started = false;
        self
    }

    /// Binds the next value of the current row.
    fn value<T>(&mut self, value: T) -> &mut Self
    where
        T: 'q + sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        if self.row_started {
            self.sql.push_str(", ");
        }
        self.row_started = true;
        self.bind(value)
    }

    /// Ends a `VALUES` list.
    fn end_rows(&mut self) -> &mut Self {
        if self.rows > 0 {
            self.sql.push(')');
        }
        self
    }

    fn finish(self) -> Result<(String, AnyArguments<'q>)> {
        match self.error {
            Some(e) => Err(Error::Internal(format!(
                "a catalog value did not encode: {e}"
            ))),
            None => Ok((self.sql, self.args)),
        }
    }

    async fn run(self, conn: &mut sqlx::AnyConnection) -> Result<sqlx::any::AnyQueryResult> {
        let (sql, args) = self.finish()?;
        Ok(sqlx::query_with(&sql, args).execute(conn).await?)
    }

    async fn fetch_all(self, conn: &mut sqlx::AnyConnection) -> Result<Vec<sqlx::any::AnyRow>> {
        let (sql, args) = self.finish()?;
        Ok(sqlx::query_with(&sql, args).fetch_all(conn).await?)
    }
}

/// Stores the table properties a commit carries (format state, declared layout) in its
/// transaction.
async fn set_commit_properties(
    tx: &mut sqlx::AnyConnection,
    backend: Backend,
    table_id: i64,
    commit: &TableCommit,
) -> Result<()> {
    let state = commit
        .format_state
        .as_ref()
        .map(|v| ("format_state", serde_json::to_string(v)));
    let declared = commit
        .declared
        .as_ref()
        .map(|v| ("declared", serde_json::to_string(v)));
    let stream = match &commit.stream_flushed {
        Some((log, lsn)) => {
            // Read, merge and write back in this transaction: other logs' positions stay.
            let current: Option<String> = sqlx::query_scalar(&format!(
                "SELECT {} FROM tables WHERE id = $1",
                backend.property("properties", "stream")
            ))
            .bind(table_id)
            .fetch_one(&mut *tx)
            .await?;
            let mut positions: std::collections::BTreeMap<String, u64> = current
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default();
            let newest = positions.entry(log.clone()).or_insert(0);
            *newest = (*newest).max(*lsn);
            Some(("stream", serde_json::to_string(&positions)))
        }
        None => None,
    };
    for (key, value) in state.into_iter().chain(declared).chain(stream) {
        let value =
            value.map_err(|e| Error::Internal(format!("table property {key} to JSON: {e}")))?;
        sqlx::query(&format!(
            "UPDATE tables SET properties = {} WHERE id = $1",
            backend.set_property("properties", "$2", "$3")
        ))
        .bind(table_id)
        .bind(key)
        .bind(value)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Recomputes the file, byte and row counts of the `touched` partitions from their files
/// and deletes those left empty; returns how many were deleted.
async fn recount_partitions(
    tx: &mut sqlx::AnyConnection,
    table_id: i64,
    touched: std::collections::BTreeSet<i64>,
) -> Result<u64> {
    let touched: Vec<i64> = touched.into_iter().collect();
    let mut removed = 0;
    for ids in touched.chunks(INSERT_CHUNK) {
        rows_in(
            "UPDATE partitions SET
               file_count = (SELECT count(*) FROM data_files f WHERE f.partition_id = partitions.id),
               total_bytes = (SELECT coalesce(sum(size), 0) FROM data_files f WHERE f.partition_id = partitions.id),
               row_count = (SELECT coalesce(sum(row_count), 0) FROM data_files f WHERE f.partition_id = partitions.id)
             WHERE table_id = ",
            table_id,
            "id",
            ids.iter().copied(),
            "",
        )
        .run(&mut *tx)
        .await?;
        let delete = rows_in(
            "DELETE FROM partitions WHERE file_count = 0 AND table_id = ",
            table_id,
            "id",
            ids.iter().copied(),
            "",
        );
        removed += delete.run(&mut *tx).await?.rows_affected();
    }
    Ok(removed)
}

/// Forgets the uncommitted-write records of the files `commit` catalogues: they are
/// committed now, and must not be swept.
/// A listing's commit ([`TableCommit::from_listing`]) without the files replaced or being
/// written since the listing (those with a deferred delete): `None` when it has none.
async fn replaced_since_listing(
    tx: &mut sqlx::AnyConnection,
    commit: &TableCommit,
) -> Result<Option<TableCommit>> {
    if !commit.from_listing || commit.upserts.is_empty() || !has_deferred(tx, commit).await? {
        return Ok(None);
    }
    let mut replaced: std::collections::HashSet<String> = std::collections::HashSet::new();
    for files in commit.upserts.chunks(INSERT_CHUNK) {
        let mut query = Statement::new("SELECT path FROM deferred_deletes WHERE location = ");
        query.bind(&commit.location).push(" AND path IN (");
        query.bind_list(files.iter().map(|f| &f.path));
        query.push(")");
        for row in query.fetch_all(&mut *tx).await? {
            replaced.insert(row.get(0));
        }
    }
    if replaced.is_empty() {
        return Ok(None);
    }
    let mut kept = commit.clone();
    kept.upserts.retain(|f| !replaced.contains(&f.path));
    Ok(Some(kept))
}

/// Whether the commit's location has any deferred delete. A crawl's commit may carry many
/// thousands of files and its location has none as a rule: look once before looking path
/// by path.
async fn has_deferred(tx: &mut sqlx::AnyConnection, commit: &TableCommit) -> Result<bool> {
    let pending: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM deferred_deletes WHERE location = $1 LIMIT 1) p",
    )
    .bind(&commit.location)
    .fetch_one(&mut *tx)
    .await?;
    Ok(pending > 0)
}

async fn release_written(tx: &mut sqlx::AnyConnection, commit: &TableCommit) -> Result<()> {
    if commit.upserts.is_empty() {
        return Ok(());
    }
    if !has_deferred(tx, commit).await? {
        return Ok(());
    }
    for files in commit.upserts.chunks(INSERT_CHUNK) {
        let mut query = Statement::new("DELETE FROM deferred_deletes WHERE location = ");
        query.bind(&commit.location).push(" AND path IN (");
        query.bind_list(files.iter().map(|f| &f.path));
        query.push(")");
        query.run(&mut *tx).await?;
    }
    Ok(())
}

/// What a commit writes into a table's row and its schema versions.
struct NewTableRow<'a> {
    schema: &'a arrow_schema::Schema,
    schema_bytes: &'a [u8],
    partition_json: &'a str,
    ts: &'a str,
}

/// Brings an existing table's row up to `commit` (a new schema version when the schema
/// changed; partition columns, location and format); returns the table's id.
async fn update_table_row(
    tx: &mut sqlx::AnyConnection,
    row: &sqlx::any::AnyRow,
    commit: &TableCommit,
    table: &NewTableRow<'_>,
    outcome: &mut CommitOutcome,
) -> Result<i64> {
    let id: i64 = row.get(0);
    let version: i64 = row.get(1);
    let old_schema = decode_schema(row.get::<&[u8], _>(2), || {
        format!("table {}.{}", commit.database, commit.name)
    })?;
    if old_schema.as_ref() != table.schema {
        if let Some(base) = commit.base_schema_version
            && base != version
        {
            return Err(Error::SchemaMoved(format!(
                "another writer changed the schema of {}.{} (to version {version}) after \
                 this commit's columns were merged onto version {base}; nothing of it was \
                 applied",
                commit.database, commit.name
            )));
        }
        sqlx::query(
            "INSERT INTO schema_versions (table_id, version, schema, columns, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(version + 1)
        .bind(table.schema_bytes)
        .bind(columns_text(table.schema))
        .bind(table.ts)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE tables SET schema_version = $2 WHERE id = $1")
            .bind(id)
            .bind(version + 1)
            .execute(&mut *tx)
            .await?;
        outcome.new_schema_version = true;
    }
    if row.get::<&str, _>(3) != table.partition_json
        || row.get::<&str, _>(4) != commit.location
        || row.get::<&str, _>(5) != commit.format.as_str()
    {
        sqlx::query(
            "UPDATE tables SET partition_columns = $2, location = $3, format = $4
             WHERE id = $1",
        )
        .bind(id)
        .bind(table.partition_json)
        .bind(&commit.location)
        .bind(commit.format.as_str())
        .execute(&mut *tx)
        .await?;
        outcome.changed = true;
    }
    // A state that no longer decodes differs from any new one.
    let old_state = row
        .get::<Option<String>, _>(6)
        .and_then(|s| serde_json::from_str::<FormatState>(&s).ok());
    if commit.format_state.is_some() && commit.format_state != old_state {
        outcome.changed = true;
    }
    Ok(id)
}

/// Inserts a new table's row and its first schema version; returns the table's id.
async fn insert_table_row(
    tx: &mut sqlx::AnyConnection,
    database_id: i64,
    commit: &TableCommit,
    table: &NewTableRow<'_>,
) -> Result<i64> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO tables (database_id, name, location, format, partition_columns,
                             schema_version, version, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, 1, 1, $6, $6) RETURNING id",
    )
    .bind(database_id)
    .bind(&commit.name)
    .bind(&commit.location)
    .bind(commit.format.as_str())
    .bind(table.partition_json)
    .bind(table.ts)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO schema_versions (table_id, version, schema, columns, created_at)
         VALUES ($1, 1, $2, $3, $4)",
    )
    .bind(id)
    .bind(table.schema_bytes)
    .bind(columns_text(table.schema))
    .bind(table.ts)
    .execute(&mut *tx)
    .await?;
    Ok(id)
}

/// Deletes the rows of the files `commit` removes and returns the partitions whose files
/// change (those, and the old partitions of files it upserts that existed before), whose
/// counts are then recomputed: a small commit to a table of many partitions touches only
/// its own.
async fn remove_files(
    tx: &mut sqlx::AnyConnection,
    table_id: i64,
    commit: &TableCommit,
    created: bool,
) -> Result<std::collections::BTreeSet<i64>> {
    // The partitions whose files change: only their counts are recomputed (a small
    // commit to a table of many partitions touches only its own).
    let mut touched: std::collections::BTreeSet<i64> = std::collections::BTreeSet::new();
    let mut removed = 0;
    for paths in commit.removals.chunks(INSERT_CHUNK) {
        let delete = rows_in(
            "DELETE FROM data_files WHERE table_id = ",
            table_id,
            "path",
            paths,
            " RETURNING partition_id",
        );
        for row in delete.fetch_all(&mut *tx).await? {
            touched.insert(row.get(0));
            removed += 1;
        }
    }
    if commit.removals_read && removed < commit.removals.len() {
        // Dropping the transaction rolls it back: nothing of this commit is kept.
        return Err(Error::Conflict(format!(
            "{}.{}: {} of the files this commit replaces were removed by another writer \
             since they were read; nothing was changed",
            commit.database,
            commit.name,
            commit.removals.len() - removed
        )));
    }
    // A file catalogued before may move to another partition (a pinned folder).
    if !created {
        for files in commit.upserts.chunks(INSERT_CHUNK) {
            let select = rows_in(
                "SELECT DISTINCT partition_id FROM data_files WHERE table_id = ",
                table_id,
                "path",
                files.iter().map(|f| &f.path),
                "",
            );
            for row in select.fetch_all(&mut *tx).await? {
                touched.insert(row.get(0));
            }
        }
    }
    Ok(touched)
}

/// The id of every partition the files `commit` upserts go to, keyed by location: the
/// known ones looked up and the new ones inserted (counted in `outcome`), many per
/// statement.
async fn partition_ids(
    tx: &mut sqlx::AnyConnection,
    table_id: i64,
    commit: &TableCommit,
    outcome: &mut CommitOutcome,
) -> Result<HashMap<String, i64>> {
    // The partitions the new files go to: the known ones looked up and the new ones
    // inserted, many per statement (a small commit to a table of many partitions reads
    // only its own).
    let mut partition_ids: HashMap<String, i64> = HashMap::new();
    let wanted: Vec<&str> = commit
        .upserts
        .iter()
        .map(|f| f.partition_location.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for locations in wanted.chunks(INSERT_CHUNK) {
        let select = rows_in(
            "SELECT location, id FROM partitions WHERE table_id = ",
            table_id,
            "location",
            locations.iter().copied(),
            "",
        );
        for row in select.fetch_all(&mut *tx).await? {
            partition_ids.insert(row.get(0), row.get(1));
        }
    }
    let mut new_partitions: Vec<(&str, String)> = Vec::new();
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for file in &commit.upserts {
        let location = file.partition_location.as_str();
        if !partition_ids.contains_key(location) && seen.insert(location) {
            let values = serde_json::to_string(&file.partition_values)
                .map_err(|e| Error::Internal(format!("partition values to JSON: {e}")))?;
            new_partitions.push((location, values));
        }
    }
    for chunk in new_partitions.chunks(INSERT_CHUNK) {
        let mut insert = Statement::new(
            r#"INSERT INTO partitions
                 (table_id, "values", location, file_count, total_bytes, row_count)"#,
        );
        for (location, values) in chunk {
            insert
                .row()
                .value(table_id)
                .value(values.as_str())
                .value(*location)
                .value(0i64)
                .value(0i64)
                .value(0i64);
        }
        insert
            .end_rows()
            .push(" ON CONFLICT DO NOTHING RETURNING location, id");
        let rows = insert.fetch_all(&mut *tx).await?;
        outcome.partitions_added += rows.len() as u64;
        for row in rows {
            partition_ids.insert(row.get(0), row.get(1));
        }
    }
    Ok(partition_ids)
}

/// Inserts or updates the rows of the files `commit` upserts, in `partition_ids`, and adds
/// their partitions to `touched`.
async fn upsert_files(
    tx: &mut sqlx::AnyConnection,
    backend: Backend,
    table_id: i64,
    commit: &TableCommit,
    partition_ids: &HashMap<String, i64>,
    touched: &mut std::collections::BTreeSet<i64>,
) -> Result<()> {
    // Files share a handful of schemas (the crawler interns them): encode and look up
    // each distinct one once.
    let mut schema_ids: HashMap<Vec<u8>, i64> = HashMap::new();
    let mut schema_by_ptr: HashMap<usize, i64> = HashMap::new();
    let mut rows: Vec<(i64, i64, String)> = Vec::with_capacity(commit.upserts.len());
    for file in &commit.upserts {
        let schema_id = match schema_by_ptr.get(&(Arc::as_ptr(&file.file_schema) as usize)) {
            Some(id) => *id,
            None => {
                let bytes = encode_schema(&strip_metadata(&file.file_schema));
                let id = match schema_ids.get(&bytes) {
                    Some(id) => *id,
                    None => {
                        sqlx::query(
                            "INSERT INTO file_schemas (schema) VALUES ($1) ON CONFLICT DO NOTHING",
                        )
                        .bind(&bytes)
                        .execute(&mut *tx)
                        .await?;
                        let id: i64 = sqlx::query_scalar(match backend {
                            Backend::Sqlite => "SELECT id FROM file_schemas WHERE schema = $1",
                            // By the indexed digest.
                            Backend::Postgres => {
                                "SELECT id FROM file_schemas WHERE digest = sha256($1)"
                            }
                        })
                        .bind(&bytes)
                        .fetch_one(&mut *tx)
                        .await?;
                        schema_ids.insert(bytes, id);
                        id
                    }
                };
                schema_by_ptr.insert(Arc::as_ptr(&file.file_schema) as usize, id);
                id
            }
        };
        let partition_id = *partition_ids.get(&file.partition_location).ok_or_else(|| {
            Error::Internal(format!(
                "partition {} of table {}.{} was not recorded",
                file.partition_location, commit.database, commit.name
            ))
        })?;
        let stats = serde_json::to_string(&file.stats)
            .map_err(|e| Error::Internal(format!("file stats to JSON: {e}")))?;
        touched.insert(partition_id);
        rows.push((partition_id, schema_id, stats));
    }
    // Many rows per statement: one round trip per chunk, not per file.
    for (files, rows) in commit
        .upserts
        .chunks(INSERT_CHUNK)
        .zip(rows.chunks(INSERT_CHUNK))
    {
        let mut insert = Statement::new(
            "INSERT INTO data_files (table_id, partition_id, path, size, e_tag, last_modified,
                                     row_count, footer_size, file_schema_id, stats,
                                     stats_version)",
        );
        for (file, (partition_id, schema_id, stats)) in files.iter().zip(rows) {
            insert
                .row()
                .value(table_id)
                .value(*partition_id)
                .value(file.path.as_str())
                .value(file.size as i64)
                .value(file.e_tag.as_deref())
                .value(
                    file.last_modified
                        .to_rfc3339_opts(SecondsFormat::Micros, true),
                )
                .value(file.row_count as i64)
                .value(file.footer_size.map(|v| v as i64))
                .value(*schema_id)
                .value(stats.as_str())
                .value(file.stats_version);
        }
        insert.end_rows().push(
            " ON CONFLICT (table_id, path) DO UPDATE SET
               partition_id = excluded.partition_id, size = excluded.size,
               e_tag = excluded.e_tag, last_modified = excluded.last_modified,
               row_count = excluded.row_count, footer_size = excluded.footer_size,
               file_schema_id = excluded.file_schema_id, stats = excluded.stats,
               stats_version = excluded.stats_version",
        );
        insert.run(&mut *tx).await?;
    }
    Ok(())
}

/// The columns of `query_history` that [`query_record`] reads, in its order (the first is
/// the key).
const QUERY_COLUMNS: &str = "query_id, user_name, database_name, sql_text, state, \
    submitted_at, queued_ms, execution_ms, rows_returned, error, front_door, planning_ms, \
    bytes_returned, bytes_scanned, files_scanned, partitions_scanned, partitions_pruned, \
    materialized_view, result_cache_hit, peak_memory_bytes, spilled_bytes";

/// How many columns [`QUERY_COLUMNS`] names.
const QUERY_COLUMN_COUNT: usize = 21;

/// A row of [`QUERY_COLUMNS`] as a record.
fn query_record(r: &sqlx::any::AnyRow) -> Result<QueryRecord> {
    Ok(QueryRecord {
        query_id: r.try_get(0)?,
        user: r.try_get(1)?,
        database: r.try_get(2)?,
        sql: r.try_get(3)?,
        state: r.try_get(4)?,
        submitted_at: r.try_get(5)?,
        queued_ms: r.try_get(6)?,
        execution_ms: r.try_get(7)?,
        rows: r.try_get(8)?,
        error: r.try_get(9)?,
        stats: QueryStats {
            front_door: r.try_get(10)?,
            planning_ms: r.try_get(11)?,
            bytes_returned: r.try_get(12)?,
            bytes_scanned: r.try_get(13)?,
            files_scanned: r.try_get(14)?,
            partitions_scanned: r.try_get(15)?,
            partitions_pruned: r.try_get(16)?,
            materialized_view: r.try_get(17)?,
            result_cache_hit: r.try_get::<i64, _>(18)? != 0,
            peak_memory_bytes: r.try_get(19)?,
            spilled_bytes: r.try_get(20)?,
        },
    })
}
