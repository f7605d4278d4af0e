//! SQL behaviour as sqllogictest files (`tests/sql/*.slt`), run against an engine over the
//! Firehose fixture lake (tables `events` and `users`) and the reduced differential cases
//! (database `r`).

use std::path::PathBuf;

use arrow::datatypes::DataType;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use tarn::engine::Engine;

use crate::common::{Env, firehose_lake, reduced_lake, render};

struct TarnDb {
    engine: Engine,
}

#[async_trait::async_trait]
impl AsyncDB for TarnDb {
    type Error = tarn::Error;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let (schema, batches) = self.engine.query(sql).await?;
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

#[tokio::test]
async fn sql_logic_tests() {
    let env = Env::new().await;
    firehose_lake(&env.lake());
    env.crawl(&env.lake()).await;
    let reduced = env.dir.path().join("reduced");
    reduced_lake(&reduced);
    env.crawl_with(
        &reduced,
        tarn::crawler::CrawlOptions {
            database: "r".into(),
            ..tarn::crawler::CrawlOptions::default()
        },
    )
    .await;

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sql");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    // Every file runs; the failures are reported together, each naming its file and record.
    let mut failures = Vec::new();
    for file in &files {
        let engine = env.engine.clone();
        let mut runner = sqllogictest::Runner::new(move || {
            let engine = engine.clone();
            async move { Ok::<_, tarn::Error>(TarnDb { engine }) }
        });
        runner.set_var("LAKE".into(), env.lake().to_string_lossy().into_owned());
        if let Err(e) = runner.run_file_async(file).await {
            failures.push(format!("{}: {e}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} .slt files failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
