//! The planner rules' plan shapes as sqllogictest files (`tests/plans/*.slt`), each file its
//! own test: a file creates small in-memory tables, shows a plan with `EXPLAIN` with a rule
//! on, then with it off (`SET tarn.<rule> = false`), and checks the answers are equal.
//!
//! Plans are printed one line per row, indentation as `-` (as DataFusion's own `.slt`
//! files do), on a session with four target partitions so they do not depend on the
//! machine. `TARN_SLT_COMPLETE=1 cargo test -p tarn-optimizer --test optimizer plans` rewrites the
//! expected plans from what the rules now produce; review the diff before committing.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::arrow::datatypes::DataType;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use tarn_optimizer::{TarnOptions, TarnQueryPlanner};

struct Session {
    ctx: SessionContext,
}

impl Session {
    fn new() -> Self {
        let config = SessionConfig::new()
            .with_target_partitions(4)
            .with_option_extension(TarnOptions::default());
        let builder = SessionStateBuilder::new()
            .with_default_features()
            .with_config(config);
        let state =
            tarn_optimizer::register(builder, Vec::new(), Arc::new(TarnQueryPlanner)).build();
        Session {
            ctx: SessionContext::new_with_state(state),
        }
    }
}

/// An `EXPLAIN`'s plans one line per row: the plan type, then its lines with their
/// indentation as `-`.
fn plan_lines(plan_type: &str, plan: &str, rows: &mut Vec<Vec<String>>) {
    rows.push(vec![format!("{plan_type}:")]);
    for line in plan.lines() {
        let text = line.trim_start();
        let indent = line.len() - text.len();
        rows.push(vec![format!("{}{text}", "-".repeat(indent))]);
    }
}

#[async_trait::async_trait]
impl AsyncDB for Session {
    type Error = DataFusionError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let df = self.ctx.sql(sql).await?;
        let schema = df.schema().as_arrow().clone();
        let batches = df.collect().await?;
        let explain = sql.trim_start().to_ascii_uppercase().starts_with("EXPLAIN");
        let mut rows = Vec::new();
        let options = FormatOptions::default().with_null("NULL");
        for batch in &batches {
            let columns = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()?;
            for row in 0..batch.num_rows() {
                let values: Vec<String> =
                    columns.iter().map(|c| c.value(row).to_string()).collect();
                match (explain, values.as_slice()) {
                    (true, [plan_type, plan]) => plan_lines(plan_type, plan, &mut rows),
                    _ => rows.push(values),
                }
            }
        }
        if schema.fields().is_empty() && rows.is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        let types = if explain {
            vec![DefaultColumnType::Text]
        } else {
            schema
                .fields()
                .iter()
                .map(|f| match f.data_type() {
                    t if t.is_integer() => DefaultColumnType::Integer,
                    t if t.is_floating() || matches!(t, DataType::Decimal128(..)) => {
                        DefaultColumnType::FloatingPoint
                    }
                    _ => DefaultColumnType::Text,
                })
                .collect()
        };
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "tarn-optimizer"
    }
}

fn plans_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/plans")
}

async fn run_file(name: &str) {
    let file = plans_dir().join(format!("{name}.slt"));
    let mut runner = sqllogictest::Runner::new(|| async { Ok(Session::new()) });
    if std::env::var_os("TARN_SLT_COMPLETE").is_some() {
        runner
            .update_test_file(
                &file,
                " ",
                sqllogictest::default_validator,
                sqllogictest::default_normalizer,
                sqllogictest::default_column_validator,
            )
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        return;
    }
    if let Err(e) = runner.run_file_async(&file).await {
        panic!("{}: {e}", file.display());
    }
}

/// One test per `.slt` file, and a check that every file has one.
macro_rules! plan_files {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                run_file(stringify!($name)).await;
            }
        )*

        #[test]
        fn every_plan_file_has_a_test() {
            let mut on_disk: Vec<String> = std::fs::read_dir(plans_dir())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "slt"))
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect();
            on_disk.sort();
            let mut listed = vec![$(stringify!($name).to_string()),*];
            listed.sort();
            assert_eq!(on_disk, listed, "add each tests/plans/*.slt file to plan_files! in tests/optimizer/plans.rs");
        }
    };
}

plan_files!(
    semi_joins,
    subquery_windows,
    averages,
    shared_subplans,
    like,
    key_filter,
    decimals,
    eager_aggregation,
);
