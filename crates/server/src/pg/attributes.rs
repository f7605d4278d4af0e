//! `pg_attribute` with the type modifiers of Tarn's columns.
//!
//! `datafusion-pg-catalog` lists every column with `atttypmod = -1` (no modifier), so
//! `format_type(atttypid, atttypmod)`, which psql's `\d` and SQLAlchemy's reflection
//! read, says `numeric` for a `decimal(38, 3)`. This table reads the crate's rows and
//! fills in each decimal column's modifier as Postgres stores it (`((precision << 16) |
//! scale) + 4`) from the table's Arrow schema, found through `pg_class` and
//! `pg_namespace`.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, Int32Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Int32Type, SchemaRef};
use datafusion::catalog::{CatalogProvider, SchemaProvider, Session, TableProvider};
use datafusion::common::DataFusionError;
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::{ExecutionPlan, collect};

/// Postgres' `numeric` type.
const NUMERIC_OID: i32 = 1700;

/// The table (see the module documentation).
#[derive(Debug)]
pub(crate) struct Attributes {
    /// The crate's `pg_attribute`.
    pub inner: Arc<dyn TableProvider>,
    /// The `pg_catalog` schema `pg_class` and `pg_namespace` are read from.
    pub pg_catalog: Arc<dyn SchemaProvider>,
    /// Tarn's catalog as the session sees it (weak: it holds this table).
    pub tarn: Weak<dyn CatalogProvider>,
}

#[async_trait]
impl TableProvider for Attributes {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let rows = read(state, &self.inner).await?;
        let tables = self.relations(state).await?;
        let mut schemas: HashMap<i32, Option<SchemaRef>> = HashMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for batch in rows {
            let typmods = self.typmods(&batch, &tables, &mut schemas).await?;
            out.push(typmods);
        }
        MemTable::try_new(self.inner.schema(), vec![out])?
            .scan(state, projection, filters, limit)
            .await
    }
}

impl Attributes {
    /// Each relation's oid with its schema and name, from `pg_class` and `pg_namespace`.
    async fn relations(&self, state: &dyn Session) -> DfResult<HashMap<i32, (String, String)>> {
        let mut namespaces = HashMap::new();
        for batch in read(state, &self.catalog_table("pg_namespace").await?).await? {
            let oids = int32_column(&batch, "oid")?;
            let names = string_column(&batch, "nspname")?;
            for (oid, name) in oids.iter().zip(names) {
                if let (Some(oid), Some(name)) = (oid, name) {
                    namespaces.insert(oid, name);
                }
            }
        }
        let mut relations = HashMap::new();
        for batch in read(state, &self.catalog_table("pg_class").await?).await? {
            let oids = int32_column(&batch, "oid")?;
            let spaces = int32_column(&batch, "relnamespace")?;
            let names = string_column(&batch, "relname")?;
            for ((oid, space), name) in oids.iter().zip(spaces.iter()).zip(names) {
                if let (Some(oid), Some(space), Some(name)) = (oid, space, name)
                    && let Some(schema) = namespaces.get(&space)
                {
                    relations.insert(oid, (schema.clone(), name));
                }
            }
        }
        Ok(relations)
    }

    async fn catalog_table(&self, name: &str) -> DfResult<Arc<dyn TableProvider>> {
        self.pg_catalog
            .table(name)
            .await?
            .ok_or_else(|| DataFusionError::Plan(format!("pg_catalog has no {name}")))
    }

    /// `batch` with the `atttypmod` of each decimal column of a Tarn table filled in.
    async fn typmods(
        &self,
        batch: &RecordBatch,
        tables: &HashMap<i32, (String, String)>,
        schemas: &mut HashMap<i32, Option<SchemaRef>>,
    ) -> DfResult<RecordBatch> {
        let relations = int32_column(batch, "attrelid")?;
        let names = string_column(batch, "attname")?;
        let types = int32_column(batch, "atttypid")?;
        let current = int32_column(batch, "atttypmod")?;
        let mut typmods = Vec::with_capacity(batch.num_rows());
        for (row, name) in names.iter().enumerate() {
            // Only `numeric` columns have a modifier to fill in: other rows keep theirs
            // without their table being looked up.
            if types.value(row) != NUMERIC_OID {
                typmods.push(current.value(row));
                continue;
            }
            let relation = relations.value(row);
            if let std::collections::hash_map::Entry::Vacant(entry) = schemas.entry(relation) {
                entry.insert(match tables.get(&relation) {
                    Some((schema, table)) => self.arrow_schema(schema, table).await,
                    None => None,
                });
            }
            let typmod = schemas
                .get(&relation)
                .and_then(Option::as_ref)
                .zip(name.as_deref())
                .and_then(|(schema, name)| schema.field_with_name(name).ok())
                .and_then(|field| decimal_typmod(field.data_type()));
            typmods.push(typmod.unwrap_or_else(|| current.value(row)));
        }
        let position = batch.schema().index_of("atttypmod")?;
        let mut columns = batch.columns().to_vec();
        columns[position] = Arc::new(Int32Array::from(typmods));
        Ok(RecordBatch::try_new(batch.schema(), columns)?)
    }

    async fn arrow_schema(&self, schema: &str, table: &str) -> Option<SchemaRef> {
        let tarn = self.tarn.upgrade()?;
        let table = tarn.schema(schema)?.table(table).await.ok()??;
        Some(table.schema())
    }
}

/// Postgres' type modifier of a decimal type: `((precision << 16) | scale) + 4`.
fn decimal_typmod(data_type: &DataType) -> Option<i32> {
    match data_type {
        DataType::Decimal128(precision, scale) | DataType::Decimal256(precision, scale)
            if *scale >= 0 =>
        {
            Some(((i32::from(*precision) << 16) | i32::from(*scale)) + 4)
        }
        _ => None,
    }
}

async fn read(state: &dyn Session, table: &Arc<dyn TableProvider>) -> DfResult<Vec<RecordBatch>> {
    let plan = table.scan(state, None, &[], None).await?;
    collect(plan, state.task_ctx()).await
}

fn int32_column<'a>(batch: &'a RecordBatch, name: &str) -> DfResult<&'a Int32Array> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<Int32Type>())
        .ok_or_else(|| DataFusionError::Internal(format!("pg_catalog column {name} is not int4")))
}

/// A text column's values, whatever its string type.
fn string_column(batch: &RecordBatch, name: &str) -> DfResult<Vec<Option<String>>> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| DataFusionError::Internal(format!("pg_catalog has no column {name}")))?;
    let text = datafusion::arrow::compute::cast(column, &DataType::Utf8)?;
    Ok(text
        .as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_string))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_modifiers_are_postgres_numeric_modifiers() {
        // Postgres stores numeric(38,3) as 2490375, numeric(20,4) as 1310728.
        assert_eq!(
            decimal_typmod(&DataType::Decimal128(38, 3)),
            Some(2_490_375)
        );
        assert_eq!(
            decimal_typmod(&DataType::Decimal128(20, 4)),
            Some(1_310_728)
        );
        assert_eq!(decimal_typmod(&DataType::Decimal128(10, -2)), None);
        assert_eq!(decimal_typmod(&DataType::Int64), None);
    }
}
