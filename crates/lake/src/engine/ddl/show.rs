//! `SHOW` statements Tarn answers itself: the result cache, a table's history, the last
//! crawls.

use super::*;

impl Engine {
    /// `SHOW RESULT CACHE`: the result cache's size, budget and counts.
    pub(super) fn show_result_cache(&self, schema: SchemaRef) -> Result<RecordBatch> {
        let s = self.result_cache_stats();
        let columns: Vec<arrow::array::ArrayRef> = [
            s.entries as u64,
            s.bytes as u64,
            s.budget as u64,
            s.hits,
            s.misses,
            s.evictions,
            s.uncacheable,
        ]
        .into_iter()
        .map(|v| Arc::new(arrow::array::UInt64Array::from(vec![v])) as _)
        .collect();
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    /// `SHOW HISTORY`: a Delta table's commits, or another table's schema versions.
    pub(super) async fn show_history(
        &self,
        schema: SchemaRef,
        database: &str,
        name: &str,
    ) -> Result<RecordBatch> {
        let table = self.existing_table(database, name).await?;
        let rows: Vec<(i64, String, Option<String>, Option<String>)> =
            if table.format == TableFormat::Delta {
                let location = Location::parse_catalogued(&table.location)?;
                let store = self.stores().store_for(&location)?;
                crate::delta::history(store, &table.location)
                    .await?
                    .into_iter()
                    .map(|c| (c.version as i64, c.committed_at, None, c.operation))
                    .collect()
            } else {
                self.catalog()
                    .schema_history(table.id)
                    .await?
                    .into_iter()
                    .map(|(version, columns, created)| (version, created, Some(columns), None))
                    .collect()
            };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.1))),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.2.as_deref()))),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.3.as_deref()))),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    /// `SHOW CRAWLS`: the last hundred crawls with their counts.
    pub(super) async fn show_crawls(&self, schema: SchemaRef) -> Result<RecordBatch> {
        let crawls = self.catalog().crawl_history(100).await?;
        let summary: Vec<Option<serde_json::Value>> = crawls
            .iter()
            .map(|c| {
                c.summary
                    .as_deref()
                    .and_then(|s| serde_json::from_str(s).ok())
            })
            .collect();
        let count = |key: &str| -> Int64Array {
            summary
                .iter()
                .map(|s| {
                    let v = s.as_ref()?.get(key)?;
                    v.as_i64().or_else(|| v.as_array().map(|a| a.len() as i64))
                })
                .collect()
        };
        let strings = |f: &dyn Fn(&crate::catalog::store::CrawlRecord) -> Option<String>| {
            Arc::new(StringArray::from(crawls.iter().map(f).collect::<Vec<_>>())) as ArrayRef
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(
                crawls.iter().map(|c| c.id).collect::<Vec<_>>(),
            )),
            strings(&|c| Some(c.location.clone())),
            strings(&|c| Some(c.database.clone())),
            strings(&|c| Some(c.status.clone())),
            strings(&|c| Some(c.started_at.clone())),
            strings(&|c| c.finished_at.clone()),
            Arc::new(count("files_added")),
            Arc::new(count("files_removed")),
            Arc::new(count("problems")),
            strings(&|c| c.summary.clone()),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}
