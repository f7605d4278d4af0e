//! `information_schema` as Postgres clients read it: Postgres' column names and type
//! names (`data_type` = `timestamp with time zone`, `udt_name` = `timestamptz`, numeric
//! precision and scale), which Grafana's query builder and Metabase's sync rely on to find
//! time and number columns. DataFusion's own `information_schema` (Arrow type names) stays
//! for the other front doors and for `SHOW TABLES`; Postgres catalog queries are pointed
//! at this one (see `query::catalog_rewrite`) under the hidden name [`SCHEMA`].

use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, Session, TableProvider};
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use tarn_lake::engine::CATALOG_NAME;

/// The name the Postgres `information_schema` is registered under in the session's
/// catalog (not listed among its schemas).
pub(crate) const SCHEMA: &str = "pg_information_schema";

/// The schemas Postgres clients must not see as Tarn databases.
const HIDDEN: [&str; 3] = ["pg_catalog", "information_schema", SCHEMA];

/// The tables of the Postgres `information_schema`.
#[derive(Debug)]
pub(crate) struct InformationSchema {
    pub catalog: Arc<dyn CatalogProvider>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Schemata,
    Tables,
    Columns,
    Views,
    TableConstraints,
    KeyColumnUsage,
    ReferentialConstraints,
}

impl Kind {
    const ALL: [(&'static str, Kind); 7] = [
        ("schemata", Kind::Schemata),
        ("tables", Kind::Tables),
        ("columns", Kind::Columns),
        ("views", Kind::Views),
        ("table_constraints", Kind::TableConstraints),
        ("key_column_usage", Kind::KeyColumnUsage),
        ("referential_constraints", Kind::ReferentialConstraints),
    ];

    fn columns(self) -> &'static [&'static str] {
        match self {
            Kind::Schemata => &["catalog_name", "schema_name", "schema_owner"],
            Kind::Tables => &[
                "table_catalog",
                "table_schema",
                "table_name",
                "table_type",
                "is_insertable_into",
                "is_typed",
                "commit_action",
            ],
            Kind::Columns => &[
                "table_catalog",
                "table_schema",
                "table_name",
                "column_name",
                "ordinal_position",
                "column_default",
                "is_nullable",
                "data_type",
                "character_maximum_length",
                "numeric_precision",
                "numeric_precision_radix",
                "numeric_scale",
                "datetime_precision",
                "udt_catalog",
                "udt_schema",
                "udt_name",
                "is_identity",
                "is_generated",
                "is_updatable",
            ],
            Kind::Views => &[
                "table_catalog",
                "table_schema",
                "table_name",
                "view_definition",
            ],
            Kind::TableConstraints => &[
                "constraint_catalog",
                "constraint_schema",
                "constraint_name",
                "table_catalog",
                "table_schema",
                "table_name",
                "constraint_type",
            ],
            Kind::KeyColumnUsage => &[
                "constraint_catalog",
                "constraint_schema",
                "constraint_name",
                "table_catalog",
                "table_schema",
                "table_name",
                "column_name",
                "ordinal_position",
            ],
            Kind::ReferentialConstraints => &[
                "constraint_catalog",
                "constraint_schema",
                "constraint_name",
                "unique_constraint_schema",
                "unique_constraint_name",
            ],
        }
    }

    /// Postgres' `information_schema` columns are text (`sql_identifier`,
    /// `character_data`), numbers (`cardinal_number`) are integers.
    fn schema(self) -> SchemaRef {
        let numbers = [
            "ordinal_position",
            "character_maximum_length",
            "numeric_precision",
            "numeric_precision_radix",
            "numeric_scale",
            "datetime_precision",
        ];
        Arc::new(Schema::new(
            self.columns()
                .iter()
                .map(|name| {
                    let data_type = if numbers.contains(name) {
                        DataType::Int32
                    } else {
                        DataType::Utf8
                    };
                    Field::new(*name, data_type, true)
                })
                .collect::<Vec<_>>(),
        ))
    }
}

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        Kind::ALL.iter().map(|(n, _)| (*n).to_string()).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Ok(Kind::ALL
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, kind)| {
                Arc::new(InfoTable {
                    kind: *kind,
                    catalog: Arc::clone(&self.catalog),
                }) as Arc<dyn TableProvider>
            }))
    }

    fn table_exist(&self, name: &str) -> bool {
        Kind::ALL.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

/// One `information_schema` table, read from the catalog when scanned.
#[derive(Debug)]
struct InfoTable {
    kind: Kind,
    catalog: Arc<dyn CatalogProvider>,
}

#[async_trait]
impl TableProvider for InfoTable {
    fn schema(&self) -> SchemaRef {
        self.kind.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let rows = self.rows().await?;
        let batch = batch(self.kind, &rows)?;
        MemTable::try_new(batch.schema(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}

impl InfoTable {
    /// The table's rows, as text cells (numbers parsed when the batch is built).
    async fn rows(&self) -> DfResult<Vec<Vec<Option<String>>>> {
        let mut rows = Vec::new();
        let mut schemas = self.catalog.schema_names();
        schemas.retain(|s| !HIDDEN.contains(&s.as_str()));
        schemas.sort();
        if self.kind == Kind::Schemata {
            for schema in schemas {
                rows.push(vec![
                    Some(CATALOG_NAME.into()),
                    Some(schema),
                    Some("tarn".into()),
                ]);
            }
            return Ok(rows);
        }
        if !matches!(self.kind, Kind::Tables | Kind::Columns | Kind::Views) {
            return Ok(rows);
        }
        for schema_name in schemas {
            let Some(schema) = self.catalog.schema(&schema_name) else {
                continue;
            };
            let mut names = schema.table_names();
            names.sort();
            for name in names {
                let Some(table) = schema.table(&name).await? else {
                    continue;
                };
                let is_view = table.table_type() == TableType::View;
                let cell = |s: &str| Some(s.to_string());
                match self.kind {
                    Kind::Tables => rows.push(vec![
                        cell(CATALOG_NAME),
                        cell(&schema_name),
                        cell(&name),
                        cell(if is_view { "VIEW" } else { "BASE TABLE" }),
                        cell("NO"),
                        cell("NO"),
                        None,
                    ]),
                    Kind::Views if is_view => rows.push(vec![
                        cell(CATALOG_NAME),
                        cell(&schema_name),
                        cell(&name),
                        None,
                    ]),
                    Kind::Columns => {
                        for (i, field) in table.schema().fields().iter().enumerate() {
                            rows.push(column_row(&schema_name, &name, i + 1, field));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(rows)
    }
}

/// A row of `information_schema.columns`.
fn column_row(schema: &str, table: &str, position: usize, field: &Field) -> Vec<Option<String>> {
    let t = pg_type(field.data_type());
    let cell = |s: &str| Some(s.to_string());
    let number = |n: Option<i64>| n.map(|n| n.to_string());
    vec![
        cell(CATALOG_NAME),
        cell(schema),
        cell(table),
        cell(field.name()),
        Some(position.to_string()),
        None,
        cell(if field.is_nullable() { "YES" } else { "NO" }),
        cell(t.data_type),
        None,
        number(t.precision),
        number(t.radix),
        number(t.scale),
        number(t.datetime_precision),
        cell(CATALOG_NAME),
        cell("pg_catalog"),
        cell(t.udt_name),
        cell("NO"),
        cell("NEVER"),
        cell("NO"),
    ]
}

/// How Postgres names and measures a column's type.
struct PgType {
    data_type: &'static str,
    udt_name: &'static str,
    precision: Option<i64>,
    radix: Option<i64>,
    scale: Option<i64>,
    datetime_precision: Option<i64>,
}

fn pg_type(t: &DataType) -> PgType {
    let plain = |data_type, udt_name| PgType {
        data_type,
        udt_name,
        precision: None,
        radix: None,
        scale: None,
        datetime_precision: None,
    };
    let binary = |data_type, udt_name, bits| PgType {
        precision: Some(bits),
        radix: Some(2),
        scale: (udt_name != "float4" && udt_name != "float8").then_some(0),
        ..plain(data_type, udt_name)
    };
    let timed = |data_type, udt_name, unit: &TimeUnit| PgType {
        datetime_precision: Some(match unit {
            TimeUnit::Second => 0,
            TimeUnit::Millisecond => 3,
            TimeUnit::Microsecond | TimeUnit::Nanosecond => 6,
        }),
        ..plain(data_type, udt_name)
    };
    match t {
        DataType::Boolean => plain("boolean", "bool"),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => binary("smallint", "int2", 16),
        DataType::Int32 | DataType::UInt16 => binary("integer", "int4", 32),
        DataType::Int64 | DataType::UInt32 => binary("bigint", "int8", 64),
        DataType::UInt64 => PgType {
            precision: Some(20),
            radix: Some(10),
            scale: Some(0),
            ..plain("numeric", "numeric")
        },
        DataType::Float16 | DataType::Float32 => binary("real", "float4", 24),
        DataType::Float64 => binary("double precision", "float8", 53),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => PgType {
            precision: Some(i64::from(*p)),
            radix: Some(10),
            scale: Some(i64::from(*s)),
            ..plain("numeric", "numeric")
        },
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => plain("text", "text"),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => plain("bytea", "bytea"),
        DataType::Date32 | DataType::Date64 => PgType {
            datetime_precision: Some(0),
            ..plain("date", "date")
        },
        DataType::Timestamp(unit, Some(_)) => {
            timed("timestamp with time zone", "timestamptz", unit)
        }
        DataType::Timestamp(unit, None) => timed("timestamp without time zone", "timestamp", unit),
        DataType::Time32(unit) | DataType::Time64(unit) => {
            timed("time without time zone", "time", unit)
        }
        DataType::Interval(_) | DataType::Duration(_) => plain("interval", "interval"),
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {
            plain("ARRAY", "_text")
        }
        DataType::Dictionary(_, value) => pg_type(value),
        _ => plain("USER-DEFINED", "text"),
    }
}

/// The rows as a batch of `kind`'s schema.
fn batch(kind: Kind, rows: &[Vec<Option<String>>]) -> DfResult<RecordBatch> {
    let schema = kind.schema();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| -> ArrayRef {
            let cells = rows.iter().map(|r| r.get(i).cloned().flatten());
            if field.data_type() == &DataType::Int32 {
                Arc::new(
                    cells
                        .map(|c| c.and_then(|v| v.parse::<i32>().ok()))
                        .collect::<Int32Array>(),
                )
            } else {
                Arc::new(cells.collect::<StringArray>())
            }
        })
        .collect();
    Ok(RecordBatch::try_new(schema, columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_names_for_arrow_types() {
        let t = pg_type(&DataType::Timestamp(
            TimeUnit::Microsecond,
            Some("UTC".into()),
        ));
        assert_eq!(
            (t.data_type, t.udt_name),
            ("timestamp with time zone", "timestamptz")
        );
        let d = pg_type(&DataType::Decimal128(38, 3));
        assert_eq!(
            (d.udt_name, d.precision, d.scale),
            ("numeric", Some(38), Some(3))
        );
        assert_eq!(pg_type(&DataType::Utf8View).data_type, "text");
        assert_eq!(pg_type(&DataType::Int32).precision, Some(32));
    }
}
