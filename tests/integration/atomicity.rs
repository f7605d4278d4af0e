//! The promises readers rely on, proven with faults injected into the real store and the
//! real catalog (`faults.rs`), while readers query in a loop:
//! - a reader sees a table before or after an ingest or a replace, never part of one, and
//!   never a missing file (a read held up across a replace still finds the old file);
//! - a view's answers stay exact at every step of a refresh;
//! - a refresh that fails or is cut off at any step (a write, its commit, between the two)
//!   keeps answers exact and the right partitions stale, leaves no file behind once the
//!   sweep's grace period has passed, and the next refresh repairs everything.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::{ArrayRef, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use tarn_lake::engine::{Engine, EngineOptions};
use tokio::task::JoinHandle;

use crate::common::{Env, render, write_parquet};
use crate::faults::{CatalogLock, Faults, allow_commits, refuse_commits};

type Answer = Result<Vec<Vec<String>>, String>;

fn write_values(path: &Path, values: impl IntoIterator<Item = i64>) {
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    let values: ArrayRef = Arc::new(Int64Array::from_iter_values(values));
    write_parquet(path, &RecordBatch::try_new(schema, vec![values]).unwrap());
}

/// An engine like a server's but without the result cache: every answer is computed.
fn uncached(env: &Env) -> Engine {
    Engine::new(
        env.catalog.clone(),
        Arc::clone(&env.stores),
        &EngineOptions {
            rollup_memory: 64 << 20,
            result_cache: 0,
            ..EngineOptions::default()
        },
    )
    .unwrap()
}

async fn answer(engine: &Engine, sql: &str) -> Answer {
    engine
        .query(sql)
        .await
        .map(|(_, batches)| render(&batches))
        .map_err(|e| e.to_string())
}

/// Runs queries in a loop, from start to stop, as a dashboard would; keeps each distinct
/// answer in the order first seen, and how many times it queried.
struct Reader {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(Vec<Answer>, usize)>,
}

impl Reader {
    fn start(engine: Engine, sqls: Vec<String>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut seen: Vec<Answer> = Vec::new();
            let mut reads = 0;
            loop {
                let mut one = Ok(Vec::new());
                for sql in &sqls {
                    match (answer(&engine, sql).await, &mut one) {
                        (Ok(rows), Ok(all)) => all.extend(rows),
                        (Err(e), _) => one = Err(format!("{sql}: {e}")),
                        (Ok(_), Err(_)) => {}
                    }
                }
                reads += 1;
                if seen.last() != Some(&one) {
                    seen.push(one);
                }
                if flag.load(Ordering::SeqCst) && reads > 1 {
                    return (seen, reads);
                }
                tokio::task::yield_now().await;
            }
        });
        Self { stop, task }
    }

    async fn stop(self) -> (Vec<Answer>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap()
    }
}

const TOTALS: &str = "SELECT count(*), sum(v) FROM t";

fn totals(values: impl IntoIterator<Item = i64>) -> Answer {
    let (n, sum) = values.into_iter().fold((0, 0), |(n, s), v| (n + 1, s + v));
    Ok(vec![vec![n.to_string(), sum.to_string()]])
}

/// Runs the statement `sql`, letting its `writes` writes go one by one and checking at
/// each that readers still see `before`; holds the catalog's write lock before the last one,
/// so the commit waits while readers still see `before`; then lets the commit go, or with
/// `cancel` cancels the statement (as a dropped client or a stopped server would) once its
/// last file is written. Returns the statement's outcome unless cancelled.
async fn write_in_steps(
    env: &Env,
    store: &Faults,
    reader: &Engine,
    sql: &'static str,
    writes: usize,
    before: &Answer,
    cancel: bool,
) -> Option<Result<(), String>> {
    store.pause_writes(true);
    let first = store.puts.load(Ordering::SeqCst);
    let engine = env.engine.clone();
    let writer = tokio::spawn(async move {
        engine
            .query(sql)
            .await
            .map(|_| ())
            .map_err(|e| format!("{sql}: {e}"))
    });
    let mut lock = None;
    let mut last = PathBuf::new();
    for i in 1..=writes {
        let (n, path) = store.paused().await;
        assert_eq!(n, first + i, "write {i} is {path}");
        assert_eq!(&answer(reader, TOTALS).await, before, "while {path} waits");
        if i == writes {
            store.pause_writes(false);
            lock = Some(CatalogLock::hold(&env.dir.path().join("data")).await);
            last = PathBuf::from(format!("/{path}"));
        }
        store.resume_write();
    }
    // Written, not committed: the commit waits for the lock.
    wait_for(&last).await;
    for _ in 0..3 {
        assert_eq!(
            &answer(reader, TOTALS).await,
            before,
            "written, not committed"
        );
        tokio::task::yield_now().await;
    }
    let lock = lock.unwrap();
    let done = if cancel {
        writer.abort();
        assert!(writer.await.unwrap_err().is_cancelled());
        lock.release().await;
        None
    } else {
        lock.release().await;
        Some(writer.await.unwrap())
    };
    assert_eq!(
        store.puts.load(Ordering::SeqCst),
        first + writes,
        "the writer made exactly the writes stepped through"
    );
    done
}

/// Waits (polling, with a deadline) until `file` exists.
async fn wait_for(file: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !file.exists() {
        assert!(std::time::Instant::now() < deadline, "{file:?} is written");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_an_ingest_or_a_replace_whole_never_part_of_one() {
    let env = Env::new().await;
    let store = Arc::new(Faults::default());
    env.stores.register("file:///", store.clone()).unwrap();
    let lake = env.lake();
    // Four partitions of 1,000 rows.
    for p in 0..4i64 {
        write_values(
            &lake.join(format!("t/p={p}/part-0.parquet")),
            p * 1000..(p + 1) * 1000,
        );
    }
    env.crawl(&lake).await;
    let reader = uncached(&env);
    let before = totals(0..4000);
    assert_eq!(answer(&reader, TOTALS).await, before);
    let background = Reader::start(reader.clone(), vec![TOTALS.into()]);

    // An append to every partition writes four files, each paused before it is written;
    // then its commit waits behind a held catalog lock. Readers see none of it until the
    // commit.
    let insert = "INSERT INTO t (v, p) SELECT value, value % 4 FROM generate_series(1, 400)";
    write_in_steps(&env, &store, &reader, insert, 4, &before, false)
        .await
        .unwrap()
        .unwrap();
    let appended = totals((0..4000).chain(1..=400));
    assert_eq!(answer(&reader, TOTALS).await, appended);

    // A query held up reading an old file while a replace commits still reads the old
    // rows: the replaced files outlive the replace by the grace period. (The looping
    // reader stops meanwhile, so that the held-up read is this query's.)
    let (mut seen, mut reads) = background.stop().await;
    store.pause_reads(Some("p=0/part-0.parquet"));
    let slow_reader = reader.clone();
    let slow = tokio::spawn(async move { answer(&slow_reader, TOTALS).await });
    store.paused().await;
    let background = Reader::start(reader.clone(), vec![TOTALS.into()]);

    // The replace, stepped through the same way.
    let replace =
        "INSERT OVERWRITE t SELECT value AS v, value % 4 AS p FROM generate_series(1, 40)";
    write_in_steps(&env, &store, &reader, replace, 4, &appended, false)
        .await
        .unwrap()
        .unwrap();
    let replaced = totals(1..=40);
    assert_eq!(answer(&reader, TOTALS).await, replaced);
    store.resume_read();
    assert_eq!(slow.await.unwrap(), appended, "the held-up read");

    // An append cancelled between its writes and its commit (a dropped client, a stopped
    // server) changes nothing; its files are deleted by the sweep after the grace period.
    let cancelled = "INSERT INTO t (v, p) SELECT value, value % 4 FROM generate_series(1, 40)";
    let none = write_in_steps(&env, &store, &reader, cancelled, 4, &replaced, true).await;
    assert!(none.is_none());
    assert_eq!(answer(&reader, TOTALS).await, replaced);
    let catalogued = catalogued_files(&env, "t").await;
    // The four replaced by the overwrite, the appended four, the cancelled append's four.
    assert_eq!(files_under(&lake.join("t")).len(), catalogued.len() + 12);
    sweep_after_every_grace(&env).await;
    assert_eq!(files_under(&lake.join("t")), catalogued);

    // The looping readers saw whole states only, in order.
    let (more, more_reads) = background.stop().await;
    for answer in more {
        if seen.last() != Some(&answer) {
            seen.push(answer);
        }
    }
    reads += more_reads;
    let states = [before, appended, replaced];
    let mut next = states.iter();
    for answer in &seen {
        assert!(
            next.any(|s| s == answer),
            "after {reads} reads, an answer out of order or never committed: {answer:?}; \
             seen {seen:?}"
        );
    }
}

const DAYS: i64 = 70;
/// Partitions a refresh commits at once (`rollup::PARTITIONS_PER_QUERY`): 70 stale days
/// are committed as 64, then 6.
const GROUP: usize = 64;
const VIEW: &str = "CREATE MATERIALIZED VIEW ev_daily AS \
    SELECT day, count(*) AS n, sum(v) AS s, max(v) AS mx FROM ev GROUP BY day";
const DASHBOARD: [&str; 2] = [
    "SELECT day, count(*), sum(v), max(v) FROM ev GROUP BY day ORDER BY day",
    "SELECT count(*), sum(v) FROM ev WHERE day > 30",
];

/// Where a refresh is cut, by the number of its write (1-based).
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// This write fails.
    FailWrite(usize),
    /// The commit after this write fails.
    FailCommit(usize),
    /// The refresh is cancelled while this write waits.
    Cancel(usize),
    /// The refresh is cancelled after this write, as its commit waits.
    CancelInCommit(usize),
}

impl Cut {
    fn write(self) -> usize {
        match self {
            Cut::FailWrite(k) | Cut::FailCommit(k) | Cut::Cancel(k) | Cut::CancelInCommit(k) => k,
        }
    }

    /// Partitions the cut refresh committed: the groups wholly before the cut's group.
    fn committed(self) -> usize {
        (self.write() - 1) / GROUP * GROUP
    }

    /// Files the cut refresh wrote and did not commit, until the sweep deletes them: a
    /// failure deletes what its group wrote at once, a cancellation cannot.
    fn left_behind(self) -> usize {
        match self {
            Cut::FailWrite(_) | Cut::FailCommit(_) => 0,
            Cut::Cancel(k) => k - 1 - self.committed(),
            Cut::CancelInCommit(k) => k - self.committed(),
        }
    }
}

/// Every base partition's file rewritten with `rows` rows and re-crawled: every day stale.
async fn rewrite_base(env: &Env, rows: i64) {
    let lake = env.lake();
    for day in 1..=DAYS {
        write_values(
            &lake.join(format!("ev/day={day}/hour=0/part-0.parquet")),
            (0..rows).map(|i| day * 100 + i),
        );
    }
    env.crawl(&lake).await;
}

async fn stale_partitions(env: &Env) -> usize {
    let rows = env.rows("SHOW MATERIALIZED VIEWS").await;
    rows[0][5].parse().unwrap()
}

async fn dashboard(engine: &Engine) -> Vec<Answer> {
    let mut out = Vec::new();
    for sql in DASHBOARD {
        out.push(answer(engine, sql).await);
    }
    out
}

/// The files of `default.table` the catalog references, as paths on disk.
async fn catalogued_files(env: &Env, table: &str) -> BTreeSet<PathBuf> {
    let id = env
        .catalog
        .table("default", table)
        .await
        .unwrap()
        .unwrap()
        .id;
    env.catalog
        .file_index(id)
        .await
        .unwrap()
        .into_iter()
        .map(|f| PathBuf::from(format!("/{}", f.path)))
        .collect()
}

/// Every file under `dir`, at any depth.
fn files_under(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for path in std::fs::read_dir(&folder)
            .unwrap()
            .flatten()
            .map(|e| e.path())
        {
            if path.is_dir() {
                folders.push(path);
            } else {
                out.insert(path);
            }
        }
    }
    out
}

/// The view's files on disk and in the catalog.
async fn view_files(env: &Env) -> (BTreeSet<PathBuf>, BTreeSet<PathBuf>) {
    let storage = tarn_lake::rollup::storage_table("ev_daily");
    let on_disk = files_under(&env.dir.path().join("warehouse/default").join(&storage));
    (on_disk, catalogued_files(env, &storage).await)
}

async fn sweep_after_every_grace(env: &Env) {
    let later = chrono::Utc::now()
        + tarn_lake::deferred::UNCOMMITTED_GRACE.max(tarn_lake::deferred::DELETE_GRACE)
        + chrono::TimeDelta::seconds(1);
    env.engine.sweep_deferred_deletes(later).await.unwrap();
}

/// Refreshes the view, pausing before each write; readers check that answers equal
/// `expected` at the first write and at the cut, and a looping reader checks every answer
/// throughout. Returns whether the refresh succeeded.
async fn refresh(
    env: &Env,
    store: &Faults,
    reader: &Engine,
    expected: &[Answer],
    cut: Option<Cut>,
) -> bool {
    let data = env.dir.path().join("data");
    let background = Reader::start(
        reader.clone(),
        DASHBOARD.iter().map(|s| s.to_string()).collect(),
    );
    let stop_at = cut.map_or(DAYS as usize, Cut::write);
    let first = store.puts.load(Ordering::SeqCst);
    store.pause_writes(true);
    let engine = env.engine.clone();
    let mut task = tokio::spawn(async move {
        engine
            .refresh_rollup("default", "ev_daily", false)
            .await
            .map(|_| ())
    });
    let mut lock = None;
    let mut written = None;
    for i in 1..=stop_at {
        let (n, path) = tokio::select! {
            paused = store.paused() => paused,
            ended = &mut task => panic!("{cut:?}: the refresh ended before write {i}: {ended:?}"),
        };
        assert_eq!(n, first + i, "{cut:?}: write {i} is {path}");
        if i == 1 || i == stop_at {
            assert_eq!(
                dashboard(reader).await,
                expected,
                "{cut:?}: while write {i} waits"
            );
        }
        if i < stop_at {
            store.resume_write();
            continue;
        }
        store.pause_writes(false);
        match cut {
            Some(Cut::FailWrite(_)) => store.fail_write(n),
            Some(Cut::FailCommit(_)) => refuse_commits(&data).await,
            Some(Cut::Cancel(_)) => {
                task.abort();
                assert!(task.await.unwrap_err().is_cancelled());
                finish(background, expected, cut).await;
                return false;
            }
            Some(Cut::CancelInCommit(_)) => {
                lock = Some(CatalogLock::hold(&data).await);
                written = Some(PathBuf::from(format!("/{path}")));
            }
            None => {}
        }
        store.resume_write();
    }
    let succeeded = if let Some(lock) = lock {
        // The last write lands; the commit waits behind the lock; the refresh is cancelled.
        wait_for(&written.unwrap()).await;
        task.abort();
        let _ = task.await;
        lock.release().await;
        false
    } else {
        let result = task.await.unwrap();
        if matches!(cut, Some(Cut::FailCommit(_))) {
            allow_commits(&data).await;
        }
        assert_eq!(result.is_ok(), cut.is_none(), "{cut:?}: {result:?}");
        result.is_ok()
    };
    finish(background, expected, cut).await;
    succeeded
}

async fn finish(background: Reader, expected: &[Answer], cut: Option<Cut>) {
    let (seen, reads) = background.stop().await;
    assert_eq!(
        seen,
        vec![Ok(expected
            .iter()
            .flat_map(|a| a.clone().unwrap())
            .collect::<Vec<_>>())],
        "{cut:?}: every one of {reads} reads during the refresh must give the base's answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_cut_at_any_step_loses_nothing_and_leaves_nothing_behind() {
    let env = Env::new().await;
    let store = Arc::new(Faults::default());
    env.stores.register("file:///", store.clone()).unwrap();
    rewrite_base(&env, 3).await;
    env.rows(VIEW).await;
    let reader = uncached(&env);
    let base = reader.without_rollup_rewrite();
    for sql in DASHBOARD {
        let notes = render(&reader.query(&format!("EXPLAIN {sql}")).await.unwrap().1);
        assert!(
            notes
                .iter()
                .any(|r| r[0] == "rollups" && r[1].starts_with("used default.ev_daily")),
            "{sql}: {notes:?}"
        );
    }

    let cuts = [
        Cut::FailWrite(1),
        Cut::FailWrite(2),
        Cut::FailWrite(GROUP),
        Cut::FailWrite(GROUP + 1),
        Cut::FailWrite(DAYS as usize),
        Cut::FailCommit(GROUP),
        Cut::FailCommit(DAYS as usize),
        Cut::Cancel(1),
        Cut::Cancel(GROUP / 2),
        Cut::Cancel(GROUP + 1),
        Cut::CancelInCommit(GROUP),
        Cut::CancelInCommit(DAYS as usize),
    ];
    for (round, cut) in cuts.into_iter().enumerate() {
        rewrite_base(&env, 4 + round as i64).await;
        assert_eq!(stale_partitions(&env).await, DAYS as usize, "{cut:?}");
        let expected = dashboard(&base).await;
        assert!(expected.iter().all(Result::is_ok), "{expected:?}");
        let (before, _) = view_files(&env).await;
        assert!(!refresh(&env, &store, &reader, &expected, Some(cut)).await);

        assert_eq!(
            stale_partitions(&env).await,
            DAYS as usize - cut.committed(),
            "{cut:?}: the groups committed before the cut are fresh, the rest stale"
        );
        assert_eq!(dashboard(&reader).await, expected, "{cut:?}: after the cut");
        let (on_disk, catalogued) = view_files(&env).await;
        assert!(
            catalogued.is_subset(&on_disk),
            "{cut:?}: a catalogued file is missing"
        );
        let left: Vec<_> = on_disk
            .iter()
            .filter(|f| !catalogued.contains(*f) && !before.contains(*f))
            .collect();
        assert_eq!(left.len(), cut.left_behind(), "{cut:?}: {left:?}");
        sweep_after_every_grace(&env).await;
        let (on_disk, catalogued) = view_files(&env).await;
        let left: Vec<_> = on_disk.difference(&catalogued).collect();
        assert!(
            left.is_empty(),
            "{cut:?}: files left behind after the sweep: {left:?}"
        );
        assert_eq!(on_disk.len(), catalogued.len(), "{cut:?}");
    }

    // The next refresh, uncut, repairs everything (with the base changed once more, all
    // of it); readers stay exact throughout.
    rewrite_base(&env, 2).await;
    assert_eq!(stale_partitions(&env).await, DAYS as usize);
    let expected = dashboard(&base).await;
    assert!(refresh(&env, &store, &reader, &expected, None).await);
    assert_eq!(stale_partitions(&env).await, 0);
    assert_eq!(dashboard(&reader).await, expected);
    let shown = env.rows("SHOW MATERIALIZED VIEWS").await;
    assert_eq!(shown[0][8], "NULL", "the last error is cleared: {shown:?}");
    sweep_after_every_grace(&env).await;
    let (on_disk, catalogued) = view_files(&env).await;
    assert_eq!(on_disk, catalogued);
    assert_eq!(catalogued.len(), DAYS as usize, "one file per day");
}
