//! Partitions: `ALTER TABLE … ADD PARTITION` (with a folder of the user's choosing),
//! `DROP PARTITION`, `MSCK REPAIR TABLE` and `SHOW PARTITIONS`.

use super::*;

impl Engine {
    /// Keeps where the partitions of `ALTER TABLE … ADD PARTITION (…) LOCATION '…'` are, in
    /// the table's properties, for this and every later crawl of the table.
    pub(super) async fn pin_partitions(
        &self,
        table: &crate::catalog::TableEntry,
        partitions: &[Vec<(String, String)>],
        locations: &[Option<String>],
        if_not_exists: bool,
    ) -> Result<()> {
        let qualified = format!("{}.{}", table.database, table.name);
        let table_location = Location::parse_catalogued(&table.location)?;
        let table_path = table_location.prefix().as_ref().to_string();
        let mut pins = self
            .catalog()
            .table_properties(table.id)
            .await?
            .pinned_partitions;
        let existing = self.catalog().partitions(table.id).await?;
        let tables = self.catalog().tables().await?;
        for (spec, location) in partitions.iter().zip(locations) {
            let Some(location) = location else {
                continue;
            };
            let named = spec
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ");
            let taken = existing
                .iter()
                .any(|p| spec_matches(table, spec, &p.values))
                || pins.iter().any(|p| spec_matches(table, spec, &p.values));
            if taken {
                if if_not_exists {
                    continue;
                }
                return Err(Error::InvalidArgument(format!(
                    "{qualified} already has the partition ({named}); ADD IF NOT EXISTS leaves \
                     it as it is, and DROP PARTITION first moves it"
                )));
            }
            let parsed = self.check_allowed(location)?;
            let refuse = |reason: String| Error::InvalidLocation {
                location: location.clone(),
                reason,
            };
            if parsed.store_url() != table_location.store_url() {
                return Err(refuse(format!(
                    "not in the store of {qualified} ({}): a partition's folder must be in \
                     its table's bucket",
                    table_location.store_url().as_str()
                )));
            }
            let path = parsed.prefix().as_ref().to_string();
            if path == table_path || is_under(&table_path, &path) {
                return Err(refuse(format!(
                    "the folder of {qualified} itself or one above it; a partition's folder \
                     is one of its own"
                )));
            }
            let url = format!("{}{path}/", table_location.store_url().as_str());
            if let Some(other) = tables.iter().find(|t| {
                t.id != table.id && (url.starts_with(&t.location) || t.location.starts_with(&url))
            }) {
                return Err(refuse(format!(
                    "the folder of table {}.{} ({}) or one holding it; a partition of \
                     {qualified} cannot take another table's files",
                    other.database, other.name, other.location
                )));
            }
            if let Some(other) = pins
                .iter()
                .find(|p| p.path == path || is_under(&path, &p.path) || is_under(&p.path, &path))
            {
                return Err(refuse(format!(
                    "overlaps the folder of another partition of {qualified} ({}); give each \
                     partition a folder of its own",
                    other.path
                )));
            }
            let values = spec
                .iter()
                .map(|(_, v)| {
                    (!(v.eq_ignore_ascii_case("null") || v == HIVE_NULL)).then(|| v.clone())
                })
                .collect();
            pins.push(PinnedPartition { values, path });
        }
        Ok(self
            .catalog()
            .set_pinned_partitions(table.id, &pins)
            .await?)
    }

    /// `MSCK REPAIR TABLE` and `ALTER TABLE … ADD PARTITION`: the partitions `added`
    /// names checked (and those at a folder of their own pinned), then the table's folder
    /// crawled again.
    pub(super) async fn repair(
        &self,
        database: &str,
        name: &str,
        added: Option<AddedPartitions<'_>>,
    ) -> Result<RecordBatch> {
        if let Some((partitions, locations, if_not_exists)) = added {
            let table = self.existing_table(database, name).await?;
            for spec in partitions {
                check_spec(&table, spec)?;
            }
            if locations.iter().any(Option::is_some) {
                self.pin_partitions(&table, partitions, locations, if_not_exists)
                    .await?;
            }
        }
        let summary = self.recrawl(database, name).await?;
        let mut text = format!(
            "repaired {database}.{name}: partitions +{} -{}, files +{} ~{} -{}",
            summary.partitions_added,
            summary.partitions_removed,
            summary.files_added,
            summary.files_changed,
            summary.files_removed
        );
        for p in &summary.problems {
            text.push_str(&format!("; {}: {}", p.path, p.message));
        }
        message(text)
    }

    /// `ALTER TABLE … DROP PARTITION`: the partitions (and pinned folders) matching each
    /// spec forgotten; their files stay.
    pub(super) async fn drop_partitions(
        &self,
        database: &str,
        name: &str,
        partitions: &[Vec<(String, String)>],
        if_exists: bool,
    ) -> Result<RecordBatch> {
        let table = self.existing_table(database, name).await?;
        let existing = self.catalog().partitions(table.id).await?;
        let mut pins = self
            .catalog()
            .table_properties(table.id)
            .await?
            .pinned_partitions;
        let pin_count = pins.len();
        let mut dropped = 0;
        let mut files = 0;
        for spec in partitions {
            check_spec(&table, spec)?;
            let matching: Vec<&Vec<Option<String>>> = existing
                .iter()
                .map(|p| &p.values)
                .filter(|values| spec_matches(&table, spec, values))
                .collect();
            // A partition at a folder of the user's choosing is forgotten with its
            // folder, so the next crawl does not bring it back.
            let before = pins.len();
            pins.retain(|p| !spec_matches(&table, spec, &p.values));
            if matching.is_empty() && before == pins.len() && !if_exists {
                return Err(Error::InvalidArgument(format!(
                    "{database}.{name} has no partition ({}); see SHOW PARTITIONS {database}.{name}",
                    spec.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            if matching.is_empty() && before != pins.len() {
                dropped += 1;
            }
            for values in matching {
                files += self.catalog().drop_partition(table.id, values).await?;
                dropped += 1;
            }
        }
        if pins.len() != pin_count {
            self.catalog()
                .set_pinned_partitions(table.id, &pins)
                .await?;
        }
        message(format!(
            "dropped {dropped} partition(s) of {database}.{name}, {files} file(s) \
             forgotten (the files are untouched)"
        ))
    }

    /// `SHOW PARTITIONS`: each partition with its files and rows (a Delta table's from
    /// its log at the catalogued version).
    pub(super) async fn show_partitions(
        &self,
        schema: SchemaRef,
        database: &str,
        name: &str,
    ) -> Result<RecordBatch> {
        let table = self.existing_table(database, name).await?;
        if table.format == TableFormat::Delta {
            // A Delta table's partitions are those of its log at the catalogued version.
            let properties = self.catalog().table_properties(table.id).await?;
            let at = properties
                .delta_version()
                .map_or(crate::delta::At::Newest, crate::delta::At::Version);
            let location = Location::parse_catalogued(&table.location)?;
            let store = self.stores().store_for(&location)?;
            let opened = crate::delta::open(store, &table.location, at).await?;
            let (columns, partitions) = crate::delta::partitions(&opened, &table.location)?;
            if columns.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "table {database}.{name} is not partitioned"
                )));
            }
            let names: Vec<&str> = columns.iter().map(String::as_str).collect();
            let label = |values: &[Option<String>]| partition_label(&names, values);
            let columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from_iter_values(
                    partitions.iter().map(|p| label(&p.values)),
                )),
                Arc::new(Int64Array::from_iter_values(
                    partitions.iter().map(|p| p.files),
                )),
                Arc::new(Int64Array::from_iter(partitions.iter().map(|p| p.rows))),
            ];
            return Ok(RecordBatch::try_new(schema, columns)?);
        }
        if table.partition_columns.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "table {database}.{name} is not partitioned"
            )));
        }
        let partitions = self.catalog().partitions(table.id).await?;
        let names: Vec<&str> = table
            .partition_columns
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        let label = |values: &[Option<String>]| partition_label(&names, values);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(
                partitions
                    .iter()
                    .map(|p| label(&p.values))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                partitions.iter().map(|p| p.file_count).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                partitions.iter().map(|p| p.row_count).collect::<Vec<_>>(),
            )),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

/// Partitions `ALTER TABLE … ADD PARTITION` names: the specs, each one's `LOCATION` if
/// it names one, and `IF NOT EXISTS`.
pub(super) type AddedPartitions<'a> = (&'a [Vec<(String, String)>], &'a [Option<String>], bool);

/// A partition as `SHOW PARTITIONS` names it: `k=v/…`, `NULL` for a null value.
pub(crate) fn partition_label(names: &[&str], values: &[Option<String>]) -> String {
    names
        .iter()
        .zip(values)
        .map(|(c, v)| format!("{c}={}", v.as_deref().unwrap_or("NULL")))
        .collect::<Vec<_>>()
        .join("/")
}
