//! Faults for tests, injected into the real parts: an object store over the local disk
//! that counts calls, can fail its Nth write, pause before each write or before reading a
//! file until the test lets it go on, and delete a file just before it is read (as another
//! writer might); and hooks on the real SQLite catalog that hold its write lock (a commit
//! then waits, as behind a slow writer) or make every commit of files fail.

use std::fmt;
use std::path::Path as FsPath;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use sqlx::Connection;
use tokio::sync::{Semaphore, mpsc};

/// How long a test waits for the operation it expects before failing.
const DEADLINE: Duration = Duration::from_secs(120);

#[derive(Debug)]
pub struct Faults {
    inner: LocalFileSystem,
    pub lists: AtomicUsize,
    pub gets: AtomicUsize,
    /// Writes begun (a put, or the start of a multipart upload).
    pub puts: AtomicUsize,
    /// Deleted from disk just before its first read (a path suffix).
    pub vanish: Mutex<Option<String>>,
    /// The write (as counted by `puts`) that fails; 0: none.
    fail_put_at: AtomicUsize,
    pause_puts: AtomicBool,
    /// The next read of a path ending in this pauses.
    pause_gets: Mutex<Option<String>>,
    paused_tx: mpsc::UnboundedSender<(usize, String)>,
    paused_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<(usize, String)>>,
    resume_writes: Semaphore,
    resume_reads: Semaphore,
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faults({})", self.inner)
    }
}

impl Default for Faults {
    fn default() -> Self {
        let (paused_tx, paused_rx) = mpsc::unbounded_channel();
        Self {
            inner: LocalFileSystem::new(),
            lists: AtomicUsize::new(0),
            gets: AtomicUsize::new(0),
            puts: AtomicUsize::new(0),
            vanish: Mutex::new(None),
            fail_put_at: AtomicUsize::new(0),
            pause_puts: AtomicBool::new(false),
            pause_gets: Mutex::new(None),
            paused_tx,
            paused_rx: tokio::sync::Mutex::new(paused_rx),
            resume_writes: Semaphore::new(0),
            resume_reads: Semaphore::new(0),
        }
    }
}

impl Faults {
    /// The write numbered `n` (as counted by `puts`, which a paused write has already
    /// counted) fails.
    pub fn fail_write(&self, n: usize) {
        self.fail_put_at.store(n, Ordering::SeqCst);
    }

    /// Every write waits, before it writes anything, until resumed.
    pub fn pause_writes(&self, on: bool) {
        self.pause_puts.store(on, Ordering::SeqCst);
    }

    /// The next read of a path ending in `suffix` waits until resumed.
    pub fn pause_reads(&self, suffix: Option<&str>) {
        *self.pause_gets.lock().unwrap() = suffix.map(str::to_string);
    }

    /// The next operation that paused (waits for one): its number (among writes, or
    /// reads) and its path.
    pub async fn paused(&self) -> (usize, String) {
        let mut rx = self.paused_rx.lock().await;
        tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .expect("an operation pauses in time")
            .expect("the store lives")
    }

    /// Lets the first paused write go on.
    pub fn resume_write(&self) {
        self.resume_writes.add_permits(1);
    }

    /// Lets the first paused read go on.
    pub fn resume_read(&self) {
        self.resume_reads.add_permits(1);
    }

    async fn wait_here(&self, n: usize, location: &Path, until: &Semaphore) {
        let _ = self.paused_tx.send((n, location.to_string()));
        until.acquire().await.expect("not closed").forget();
    }

    async fn before_write(&self, location: &Path) -> object_store::Result<()> {
        let n = self.puts.fetch_add(1, Ordering::SeqCst) + 1;
        if self.pause_puts.load(Ordering::SeqCst) {
            self.wait_here(n, location, &self.resume_writes).await;
        }
        if n == self.fail_put_at.load(Ordering::SeqCst) {
            return Err(object_store::Error::Generic {
                store: "Faults",
                source: format!("injected failure of write {n} ({location})").into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for Faults {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.before_write(location).await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.before_write(location).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let n = self.gets.fetch_add(1, Ordering::SeqCst) + 1;
        let vanish = self.vanish.lock().unwrap().clone();
        if vanish.is_some_and(|v| location.as_ref().ends_with(&v)) {
            let _ = std::fs::remove_file(format!("/{location}"));
        }
        let pause = {
            let mut pause = self.pause_gets.lock().unwrap();
            if pause
                .as_ref()
                .is_some_and(|p| location.as_ref().ends_with(p.as_str()))
            {
                pause.take()
            } else {
                None
            }
        };
        if pause.is_some() {
            self.wait_here(n, location, &self.resume_reads).await;
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

async fn connect(data_dir: &FsPath) -> sqlx::SqliteConnection {
    let url = format!("sqlite://{}", data_dir.join("catalog.db").display());
    sqlx::SqliteConnection::connect(&url).await.unwrap()
}

/// The catalog's write lock, held by another connection: every commit waits (readers do
/// not) until [`CatalogLock::release`].
pub struct CatalogLock(sqlx::SqliteConnection);

impl CatalogLock {
    pub async fn hold(data_dir: &FsPath) -> Self {
        let mut conn = connect(data_dir).await;
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut conn)
            .await
            .unwrap();
        Self(conn)
    }

    pub async fn release(mut self) {
        sqlx::query("ROLLBACK").execute(&mut self.0).await.unwrap();
        self.0.close().await.unwrap();
    }
}

/// Every catalog commit that records files fails (and rolls back) from now until
/// [`allow_commits`], as a full disk or a lost catalog would make it.
pub async fn refuse_commits(data_dir: &FsPath) {
    let mut conn = connect(data_dir).await;
    sqlx::query(
        "CREATE TRIGGER injected_commit_failure BEFORE INSERT ON data_files \
         BEGIN SELECT RAISE(ABORT, 'injected commit failure'); END",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
}

pub async fn allow_commits(data_dir: &FsPath) {
    let mut conn = connect(data_dir).await;
    sqlx::query("DROP TRIGGER injected_commit_failure")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}
