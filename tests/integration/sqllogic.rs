//! SQL behaviour as sqllogictest files (`tests/sql/*.slt`), each file its own test, run
//! against an engine over the Firehose fixture lake (tables `events` and `users`) and the
//! reduced differential cases (database `r`).

use std::path::PathBuf;

use arrow::datatypes::DataType;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use tarn_lake::engine::Engine;
use tarn_lake::engine::settings::Settings;

use crate::common::{Env, firehose_lake, reduced_lake, render};

/// One session: `SET`, `RESET` and `USE` last until the file's next `connection`.
struct TarnDb {
    engine: Engine,
    settings: Settings,
}

#[async_trait::async_trait]
impl AsyncDB for TarnDb {
    type Error = tarn_lake::Error;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let (schema, batches) = self
            .engine
            .query_in_session(sql, &mut self.settings)
            .await?;
        let types = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                t if t.is_integer() => DefaultColumnType::Integer,
                t if t.is_floating() || matches!(t, DataType::Decimal128(..)) => {
                    DefaultColumnType::FloatingPoint
                }
                _ => DefaultColumnType::Text,
            })
            .collect();
        Ok(DBOutput::Rows {
            types,
            rows: render(&batches),
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "tarn"
    }
}

/// Runs `tests/sql/<name>.slt` against an engine over the fixture lakes; a failure names
/// the file and the record.
async fn run_file(name: &str) {
    let env = Env::new().await;
    firehose_lake(&env.lake());
    env.crawl(&env.lake()).await;
    let reduced = env.dir.path().join("reduced");
    reduced_lake(&reduced);
    env.crawl_with(
        &reduced,
        tarn_lake::crawler::CrawlOptions::new("r", Default::default()),
    )
    .await;
    let file = sql_dir().join(format!("{name}.slt"));
    let engine = env.engine.clone();
    let mut runner = sqllogictest::Runner::new(move || {
        let engine = engine.clone();
        async move {
            Ok::<_, tarn_lake::Error>(TarnDb {
                engine,
                settings: Settings::default(),
            })
        }
    });
    runner.set_var("LAKE".into(), env.lake().to_string_lossy().into_owned());
    let out = env.dir.path().join("out");
    runner.set_var("OUT".into(), out.to_string_lossy().into_owned());
    if let Err(e) = runner.run_file_async(&file).await {
        panic!("{}: {e}", file.display());
    }
}

fn sql_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sql")
}

/// One test per `.slt` file, so a failing file is named and the others still run.
macro_rules! slt_files {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                run_file(stringify!($name)).await;
            }
        )*

        /// Every `.slt` file in `tests/sql` has its test above (a new file without one
        /// would never run).
        #[test]
        fn every_slt_file_has_a_test() {
            let mut on_disk: Vec<String> = std::fs::read_dir(sql_dir())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "slt"))
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect();
            on_disk.sort();
            let mut listed = vec![$(stringify!($name).to_string()),*];
            listed.sort();
            assert_eq!(on_disk, listed, "add each tests/sql/*.slt file to slt_files! in tests/integration/sqllogic.rs");
        }
    };
}

slt_files!(
    athena_functions,
    session,
    basics,
    ctas,
    ddl,
    errors,
    joins_windows,
    time_windows,
    views,
    wrong_answers,
);
