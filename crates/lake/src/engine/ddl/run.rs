//! Running Tarn's commands: one entry for a statement with its bound rows, and the
//! dispatch to each command's method.

use super::*;

impl Engine {
    /// Runs a command with the parameter rows a client bound (each row is one execution of
    /// the statement; an `INSERT`'s rows from every execution go into one ingest).
    ///
    /// # Errors
    /// As [`Engine::run_command`] and [`Engine::insert`].
    pub async fn run_statement(
        &self,
        command: &Command,
        rows: &[RecordBatch],
    ) -> Result<RecordBatch> {
        match command {
            Command::Insert { .. } => self.insert_command(command, rows).await,
            _ => self.run_command(command).await,
        }
    }

    /// Runs a Tarn statement and returns its result.
    ///
    /// # Errors
    /// Whatever the statement fails with: an unknown table or database, a location that
    /// is not allowed, a crawl failure.
    pub async fn run_command(&self, command: &Command) -> Result<RecordBatch> {
        let batch = match command {
            Command::Insert { .. } => self.insert_command(command, &[]).await?,
            Command::CreateMaterializedView { .. }
            | Command::RefreshMaterializedView { .. }
            | Command::DropMaterializedView { .. }
            | Command::ShowMaterializedViews
            | Command::CreateView { .. }
            | Command::DropView { .. }
            | Command::ShowCreateView { .. }
            | Command::CreateTableAs(_)
            | Command::Unload(_) => self.run_view_command(command).await?,
            Command::ShowResultCache => self.show_result_cache(command.schema())?,
            Command::Session(crate::engine::settings::SessionCommand::Show(name)) => {
                self.show_settings(name.as_deref())?
            }
            Command::Session(command) => {
                return Err(crate::engine::settings::without_session(command));
            }
            Command::CreateDatabase {
                name,
                if_not_exists,
            } => {
                if name.eq_ignore_ascii_case(crate::engine::SYSTEM_DATABASE) {
                    return Err(Error::InvalidArgument(format!(
                        "'{name}' is Tarn's own database (system.queries); choose another name"
                    )));
                }
                if self.catalog().create_database(name, *if_not_exists).await? {
                    message(format!("created database {name}"))?
                } else {
                    message(format!("database {name} already exists"))?
                }
            }
            Command::DropDatabase {
                name,
                if_exists,
                cascade,
            } => {
                if self
                    .catalog()
                    .drop_database(name, *if_exists, *cascade)
                    .await?
                {
                    message(format!("dropped database {name}"))?
                } else {
                    message(format!("database {name} does not exist"))?
                }
            }
            Command::CreateExternalTable {
                database,
                name,
                location,
                if_not_exists,
                declared,
                format,
            } => {
                self.create_external_table(
                    database,
                    name,
                    location,
                    *if_not_exists,
                    declared,
                    *format,
                )
                .await?
            }
            Command::DropTable {
                database,
                name,
                if_exists,
            } => {
                if self.catalog().drop_table(database, name).await? {
                    message(format!(
                        "dropped table {database}.{name} (its files are untouched)"
                    ))?
                } else if *if_exists {
                    message(format!("table {database}.{name} does not exist"))?
                } else {
                    return Err(Error::TableNotFound {
                        name: format!("{database}.{name}"),
                    });
                }
            }
            Command::Repair { database, name } => self.repair(database, name, None).await?,
            Command::AddPartitions {
                database,
                name,
                partitions,
                locations,
                if_not_exists,
            } => {
                self.repair(
                    database,
                    name,
                    Some((partitions, locations, *if_not_exists)),
                )
                .await?
            }
            Command::DropPartitions {
                database,
                name,
                partitions,
                if_exists,
            } => {
                self.drop_partitions(database, name, partitions, *if_exists)
                    .await?
            }
            Command::ShowHistory { database, name } => {
                self.show_history(command.schema(), database, name).await?
            }
            Command::ShowCrawls => self.show_crawls(command.schema()).await?,
            Command::Optimize {
                database,
                name,
                predicate,
            } => message(self.optimize(database, name, predicate.as_deref()).await?)?,
            Command::ShowDatabases => {
                self.refresh().await?;
                let names = self.databases();
                RecordBatch::try_new(command.schema(), vec![Arc::new(StringArray::from(names))])?
            }
            Command::ShowPartitions { database, name } => {
                self.show_partitions(command.schema(), database, name)
                    .await?
            }
        };
        Ok(batch)
    }

    /// The commands about views, materialized views and `CREATE TABLE … AS SELECT` (part of [`Engine::run_command`]).
    pub(super) async fn run_view_command(&self, command: &Command) -> Result<RecordBatch> {
        Ok(match command {
            Command::CreateMaterializedView {
                definition,
                if_not_exists,
                or_replace,
            } => {
                if *or_replace {
                    self.drop_rollup(&definition.database, &definition.name)
                        .await?;
                }
                message(
                    self.create_rollup(definition.as_ref().clone(), *if_not_exists)
                        .await?,
                )?
            }
            Command::RefreshMaterializedView {
                database,
                name,
                full,
            } => {
                let report = self.refresh_rollup(database, name, *full).await?;
                message(format!("refreshed {database}.{name}: {report}"))?
            }
            Command::DropMaterializedView {
                database,
                name,
                if_exists,
            } => {
                if self.drop_rollup(database, name).await? {
                    message(format!("dropped materialized view {database}.{name}"))?
                } else if *if_exists {
                    message(format!(
                        "materialized view {database}.{name} does not exist"
                    ))?
                } else {
                    return Err(Error::InvalidArgument(format!(
                        "materialized view '{database}.{name}' does not exist; see SHOW \
                         MATERIALIZED VIEWS"
                    )));
                }
            }
            Command::ShowMaterializedViews => self.show_rollups().await?,
            Command::CreateView {
                database,
                name,
                query,
                or_replace,
                if_not_exists,
            } => message(
                self.create_view(database, name, query, *or_replace, *if_not_exists)
                    .await?,
            )?,
            Command::DropView {
                database,
                name,
                if_exists,
            } => {
                if self.catalog().drop_view(database, name).await? {
                    message(format!("dropped view {database}.{name}"))?
                } else if *if_exists {
                    message(format!("view {database}.{name} does not exist"))?
                } else {
                    return Err(crate::engine::sql_views::no_such_view(database, name));
                }
            }
            Command::ShowCreateView { database, name } => {
                self.show_create_view(database, name).await?
            }
            Command::CreateTableAs(spec) => message(self.create_table_as(spec).await?)?,
            Command::Unload(spec) => message(self.unload(spec).await?)?,
            _ => return Err(Error::Internal("not a view command".into())),
        })
    }
}
