//! The crawler and the engine against an instrumented object store: it counts LIST calls
//! and can delete an object just before it is first read (as another writer might between
//! a crawl's listing and its footer reads).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::common::{Env, firehose_lake};
use crate::faults::Faults;

fn spy() -> Arc<Faults> {
    Arc::new(Faults::default())
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
