//! `INSERT INTO` / `INSERT OVERWRITE` and bulk ingest: a statement's rows or a client's
//! batches written as Parquet into a table in one commit.

use super::*;

impl Engine {
    pub(super) async fn insert_command(
        &self,
        command: &Command,
        rows: &[RecordBatch],
    ) -> Result<RecordBatch> {
        let Command::Insert {
            database,
            name,
            columns,
            source,
            overwrite,
        } = command
        else {
            return Err(Error::Internal("not an INSERT".into()));
        };
        let count = self
            .insert(database, name, columns, source, *overwrite, rows)
            .await?;
        Ok(RecordBatch::try_new(
            command.schema(),
            vec![Arc::new(arrow::array::UInt64Array::from(vec![count]))],
        )?)
    }

    /// `INSERT`: plans `source` once per parameter row (once without), fits its columns to
    /// the table's (by the column list, else by position; cast to the table's types) and
    /// bulk-ingests the rows in one commit. Returns the number of rows inserted.
    ///
    /// # Errors
    /// [`Error::TableNotFound`]; [`Error::Sql`] when the columns do not fit the table; as
    /// [`crate::ingest::ingest`].
    pub async fn insert(
        &self,
        database: &str,
        name: &str,
        columns: &[String],
        source: &str,
        overwrite: bool,
        rows: &[RecordBatch],
    ) -> Result<u64> {
        use futures::{StreamExt, TryStreamExt};
        let table =
            self.catalog()
                .table(database, name)
                .await?
                .ok_or_else(|| Error::TableNotFound {
                    name: format!("{database}.{name}"),
                })?;
        let table_schema = table.table_schema();
        let runs: Vec<Option<&RecordBatch>> = if rows.is_empty() {
            vec![None]
        } else {
            rows.iter().map(Some).collect()
        };
        let mut streams = Vec::with_capacity(runs.len());
        let mut target: Option<SchemaRef> = None;
        for row in runs {
            let df = self.plan_with_row(source, row).await?;
            let produced = df.schema().as_arrow().clone();
            let names: Vec<String> = if columns.is_empty() {
                if produced.fields().len() > table_schema.fields().len() {
                    return Err(Error::Sql(format!(
                        "INSERT gives {} values per row but {database}.{name} has {} columns",
                        produced.fields().len(),
                        table_schema.fields().len()
                    )));
                }
                table_schema
                    .fields()
                    .iter()
                    .take(produced.fields().len())
                    .map(|f| f.name().clone())
                    .collect()
            } else {
                if columns.len() != produced.fields().len() {
                    return Err(Error::Sql(format!(
                        "INSERT names {} columns but gives {} values per row",
                        columns.len(),
                        produced.fields().len()
                    )));
                }
                columns.to_vec()
            };
            let mut fields = Vec::with_capacity(names.len());
            for (n, f) in names.iter().zip(produced.fields()) {
                let t = table_schema
                    .field_with_name(n)
                    .map(|tf| tf.data_type().clone())
                    .map_err(|_| Error::Sql(format!("{database}.{name} has no column '{n}'")))?;
                if !arrow::compute::can_cast_types(f.data_type(), &t) {
                    return Err(Error::Sql(format!(
                        "column '{n}' is {t} in {database}.{name}; a {} value cannot be \
                         inserted into it",
                        f.data_type()
                    )));
                }
                fields.push(Field::new(n, t, true));
            }
            let schema: SchemaRef = Arc::new(Schema::new(fields));
            if target.as_ref().is_some_and(|t| t != &schema) {
                return Err(Error::InvalidArgument(
                    "parameter rows give values of different types; bind one type per \
                     parameter"
                        .into(),
                ));
            }
            target = Some(Arc::clone(&schema));
            // Led by an empty batch: a source that gives no rows still names the columns,
            // and inserts nothing.
            let empty = RecordBatch::new_empty(Arc::clone(&schema));
            let stream = df.execute_stream().await.map_err(Error::from)?;
            let rows = stream.map_err(Error::from).and_then(move |batch| {
                let schema = Arc::clone(&schema);
                async move {
                    let columns = batch
                        .columns()
                        .iter()
                        .zip(schema.fields())
                        .map(|(c, f)| {
                            // Strict: a value that does not convert is an error, not NULL.
                            let options = arrow::compute::CastOptions {
                                safe: false,
                                ..Default::default()
                            };
                            arrow::compute::cast_with_options(c, f.data_type(), &options)
                                .map_err(|e| Error::Sql(format!("column '{}': {e}", f.name())))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    Ok(RecordBatch::try_new(schema, columns)?)
                }
            });
            streams.push(futures::stream::once(async move { Ok(empty) }).chain(rows));
        }
        let request = crate::ingest::IngestRequest {
            database: Some(database.to_string()),
            table: name.to_string(),
            mode: if overwrite {
                crate::ingest::IngestMode::Replace
            } else {
                crate::ingest::IngestMode::Append
            },
            layout: Default::default(),
        };
        self.ingest(&request, futures::stream::iter(streams).flatten())
            .await
    }

    /// Writes `batches` into the table `request` names (in the default database when it
    /// names none) and commits them, then refreshes the catalog snapshot and the views
    /// over the table; returns the number of rows ingested. See [`crate::ingest::ingest`].
    ///
    /// # Errors
    /// As [`crate::ingest::ingest`].
    pub async fn ingest<S>(&self, request: &crate::ingest::IngestRequest, batches: S) -> Result<u64>
    where
        S: futures::Stream<Item = Result<arrow::array::RecordBatch>> + Send,
    {
        let database = request
            .database
            .clone()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| self.default_database());
        let database_exists = database == crate::engine::DEFAULT_DATABASE
            || self
                .catalog()
                .databases()
                .await?
                .iter()
                .any(|d| d.name == database);
        let to = crate::ingest::Destination {
            catalog: self.catalog(),
            stores: self.stores(),
            warehouse: self.warehouse_location(&database, &request.table),
            database,
            database_exists,
        };
        let rows = crate::ingest::ingest(to, request, batches).await?;
        self.refresh().await?;
        self.refresh_stale_rollups().await;
        Ok(rows)
    }
}
