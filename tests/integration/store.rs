//! The crawler and the engine against an instrumented object store: it counts LIST calls
//! and can delete an object just before it is first read (as another writer might between
//! a crawl's listing and its footer reads).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use crate::common::{Env, firehose_lake};

#[derive(Debug)]
struct Spy {
    inner: LocalFileSystem,
    lists: AtomicUsize,
    gets: AtomicUsize,
    /// Deleted from disk just before its first read.
    vanish: Mutex<Option<String>>,
}

impl fmt::Display for Spy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Spy({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Spy {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        let vanish = self.vanish.lock().unwrap().clone();
        if vanish.is_some_and(|v| location.as_ref().ends_with(&v)) {
            let _ = std::fs::remove_file(format!("/{location}"));
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

fn spy() -> Arc<Spy> {
    Arc::new(Spy {
        inner: LocalFileSystem::new(),
        lists: AtomicUsize::new(0),
        gets: AtomicUsize::new(0),
        vanish: Mutex::new(None),
    })
}

#[tokio::test]
async fn queries_make_no_list_calls() {
    let env = Env::new().await;
    let store = spy();
    env.stores.register("file:///", store.clone()).unwrap();
    firehose_lake(&env.lake());
    env.crawl(&env.lake()).await;
    assert!(store.lists.load(Ordering::SeqCst) >= 1, "the crawl lists");

    let lists = store.lists.load(Ordering::SeqCst);
    let gets = store.gets.load(Ordering::SeqCst);
    let rows = env
        .rows("SELECT kind, count(*) FROM events WHERE day = 6 GROUP BY kind ORDER BY kind")
        .await;
    assert_eq!(
        rows,
        vec![vec!["buy", "1"], vec!["click", "1"], vec!["view", "2"]]
    );
    assert_eq!(
        store.lists.load(Ordering::SeqCst),
        lists,
        "no LIST at query time"
    );
    assert!(
        store.gets.load(Ordering::SeqCst) > gets,
        "the query read through the spy"
    );
}

#[tokio::test]
async fn a_file_deleted_between_listing_and_reading_is_reported_and_the_crawl_goes_on() {
    let env = Env::new().await;
    let store = spy();
    env.stores.register("file:///", store.clone()).unwrap();
    firehose_lake(&env.lake());
    *store.vanish.lock().unwrap() = Some("hour=14/part-0.parquet".into());
    let summary = env.crawl(&env.lake()).await;
    let vanished: Vec<_> = summary
        .problems
        .iter()
        .filter(|p| p.path.ends_with("hour=14/part-0.parquet"))
        .collect();
    assert_eq!(vanished.len(), 1, "{summary}");
    assert!(
        vanished[0].message.contains("deleted"),
        "{}",
        vanished[0].message
    );
    assert_eq!(
        env.rows("SELECT count(*) FROM events").await,
        vec![vec!["7"]]
    );
}
