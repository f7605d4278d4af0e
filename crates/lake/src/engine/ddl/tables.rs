//! Tables: `CREATE EXTERNAL TABLE` (a crawl of the location with the declared layout),
//! the table a statement names, and re-crawling it.

use super::*;

impl Engine {
    pub(super) async fn existing_table(
        &self,
        database: &str,
        name: &str,
    ) -> Result<crate::catalog::TableEntry> {
        self.catalog()
            .table(database, name)
            .await?
            .ok_or_else(|| Error::TableNotFound {
                name: format!("{database}.{name}"),
            })
    }

    pub(super) async fn recrawl(
        &self,
        database: &str,
        name: &str,
    ) -> Result<crate::crawler::CrawlSummary> {
        let table = self.existing_table(database, name).await?;
        let options = CrawlOptions::table(database, name);
        let mut summary = Crawler::new(self.catalog().clone(), Arc::clone(self.stores()))
            .crawl(&table.location, &options)
            .await?;
        self.refresh_after_crawl(&mut summary).await;
        Ok(summary)
    }

    /// `CREATE EXTERNAL TABLE`: the table catalogued from what `location` holds (or
    /// created empty with its declared columns), refused when the location holds another
    /// format than `format`.
    pub(super) async fn create_external_table(
        &self,
        database: &str,
        name: &str,
        location: &str,
        if_not_exists: bool,
        declared: &Declared,
        format: TableFormat,
    ) -> Result<RecordBatch> {
        let parsed = self.check_allowed(location)?;
        if format == TableFormat::Delta {
            let store = self.stores().store_for(&parsed)?;
            let log = object_store::path::Path::from(format!(
                "{}/_delta_log",
                parsed.prefix().as_ref().trim_end_matches('/')
            ));
            let entries: Vec<_> = futures::TryStreamExt::try_collect(store.list(Some(&log)))
                .await
                .map_err(|e| Error::store(location.to_string(), e))?;
            if !entries.iter().any(|m| {
                crate::crawler::layout::is_delta_log_entry(m.location.filename().unwrap_or(""))
            }) {
                return Err(Error::InvalidArgument(format!(
                    "{location} holds no Delta table: its _delta_log/ has no commit or \
                     checkpoint; use STORED AS PARQUET for loose Parquet files"
                )));
            }
        }
        if let Some(existing) = self.catalog().table(database, name).await? {
            if if_not_exists {
                return message(format!("table {database}.{name} already exists"));
            }
            return Err(Error::InvalidArgument(format!(
                "table {database}.{name} already exists (at {}); use IF NOT EXISTS, \
                 or DROP TABLE first",
                existing.location
            )));
        }
        if !self.databases().iter().any(|d| d == database) {
            self.refresh().await?;
            if !self.databases().iter().any(|d| d == database) {
                return Err(Error::InvalidArgument(format!(
                    "database '{database}' does not exist; CREATE DATABASE {database} first"
                )));
            }
        }
        let options = CrawlOptions {
            declared: declared.clone(),
            create_only: true,
            ..CrawlOptions::table(database, name)
        };
        let summary = Crawler::new(self.catalog().clone(), Arc::clone(self.stores()))
            .crawl(parsed.url.as_str(), &options)
            .await?;
        let Some(created) = self.catalog().table(database, name).await? else {
            let mut text = format!(
                "no Parquet files at {location} to make {database}.{name} from; declare \
                 its columns to create it empty"
            );
            for p in &summary.problems {
                text.push_str(&format!("; {}: {}", p.path, p.message));
            }
            return Err(Error::InvalidArgument(text));
        };
        if created.format != format {
            // This statement made the table from what it found; it is not what was
            // asked for, so it goes again.
            self.catalog().drop_table(database, name).await?;
            return Err(Error::InvalidArgument(format!(
                "{location} holds {} files, not {}; nothing was created (use STORED AS \
                 {})",
                created.format.as_str().to_ascii_uppercase(),
                format.as_str().to_ascii_uppercase(),
                created.format.as_str().to_ascii_uppercase()
            )));
        }
        let mut text = if created.format == TableFormat::Delta {
            let properties = self.catalog().table_properties(created.id).await?;
            format!(
                "created Delta table {database}.{name} at version {}",
                properties.delta_version().unwrap_or_default()
            )
        } else {
            format!(
                "created table {database}.{name}: {} files, {} partitions",
                summary.files_added, summary.partitions_added
            )
        };
        for p in &summary.problems {
            text.push_str(&format!("; {}: {}", p.path, p.message));
        }
        message(text)
    }
}
