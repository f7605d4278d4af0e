//! Views (`CREATE [OR REPLACE] VIEW`, `DROP VIEW`, `SHOW CREATE VIEW`): saved queries in
//! the catalog, planned again at every catalog generation (after the table snapshot,
//! before the rollup index, so a materialized view and the rollup rewrite see through
//! them), in dependency order so a view over a view reads the new plan of the one below.
//!
//! A view whose query no longer plans, or whose base lost or renamed a column the view
//! had, is kept and reported by name when queried; a column whose type widened (as a
//! crawl widens `int` to `bigint`) is read with its new type.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::catalog::view::ViewTable;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::resolve::resolve_table_references;
use datafusion::sql::sqlparser::ast::Query;

use super::{Engine, Shared, parse};
use crate::catalog::{ViewColumn, ViewDef};
use crate::error::{Error, Result};

/// A view's database and name.
type ViewKey = (String, String);

/// A view as the engine holds it at one generation.
#[derive(Debug, Clone)]
pub(crate) enum Planned {
    Ready(Arc<dyn TableProvider>),
    /// Why it cannot be read now (named in the error of a query that reads it).
    Broken(String),
}

/// Views by database and name, as of the snapshot's generation.
pub(crate) type ViewIndex = std::sync::RwLock<Arc<HashMap<(String, String), Planned>>>;

impl Shared {
    /// The view `database.name`, if there is one.
    pub(crate) fn sql_view(&self, database: &str, name: &str) -> Option<Planned> {
        let index = self.sql_views.read().ok()?;
        index
            .get(&(database.to_string(), name.to_string()))
            .cloned()
    }

    /// Names of the views of `database`.
    pub(crate) fn sql_view_names(&self, database: &str) -> Vec<String> {
        self.sql_views
            .read()
            .map(|index| {
                index
                    .keys()
                    .filter(|(d, _)| d == database)
                    .map(|(_, n)| n.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The views `query` reads, as `(database, name)` among `known`.
fn dependencies(
    state: &SessionState,
    database: &str,
    query: &str,
    known: &BTreeSet<(String, String)>,
) -> Vec<(String, String)> {
    let Ok(statement) = parse::statement(state, query) else {
        return Vec::new();
    };
    let Ok((tables, _)) = resolve_table_references(&statement, true) else {
        return Vec::new();
    };
    tables
        .into_iter()
        .map(|t| {
            (
                t.schema().unwrap_or(database).to_string(),
                t.table().to_string(),
            )
        })
        .filter(|key| known.contains(key))
        .collect()
}

/// `views` ordered so each comes after the views it reads; those in a cycle are returned
/// apart.
fn in_dependency_order(state: &SessionState, views: Vec<ViewDef>) -> (Vec<ViewDef>, Vec<ViewDef>) {
    let known: BTreeSet<(String, String)> = views
        .iter()
        .map(|v| (v.database.clone(), v.name.clone()))
        .collect();
    let mut waiting: BTreeMap<ViewKey, (ViewDef, Vec<ViewKey>)> = views
        .into_iter()
        .map(|v| {
            let deps = dependencies(state, &v.resolve_in, &v.query, &known);
            ((v.database.clone(), v.name.clone()), (v, deps))
        })
        .collect();
    let mut ordered = Vec::new();
    loop {
        let ready: Vec<(String, String)> = waiting
            .iter()
            .filter(|(_, (_, deps))| deps.iter().all(|d| !waiting.contains_key(d)))
            .map(|(k, _)| k.clone())
            .collect();
        if ready.is_empty() {
            break;
        }
        for key in ready {
            if let Some((view, _)) = waiting.remove(&key) {
                ordered.push(view);
            }
        }
    }
    (ordered, waiting.into_values().map(|(v, _)| v).collect())
}

impl Engine {
    /// The views that can be read now, as `(database, name, table)` (the front doors'
    /// table listings).
    pub fn readable_views(&self) -> Vec<(String, String, Arc<dyn TableProvider>)> {
        let Ok(index) = self.shared.sql_views.read() else {
            return Vec::new();
        };
        let mut out: Vec<_> = index
            .iter()
            .filter_map(|((database, name), planned)| match planned {
                Planned::Ready(table) => Some((database.clone(), name.clone(), Arc::clone(table))),
                Planned::Broken(_) => None,
            })
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

    /// Plans every view at `generation` and publishes each as it is planned (the
    /// refresh that installed this generation's snapshot alone may publish).
    pub(super) async fn refresh_views(&self, generation: i64) -> Result<()> {
        let records = self.shared.catalog.views().await?;
        let (ordered, cyclic) = in_dependency_order(
            &self.state,
            records.into_iter().map(|r| r.definition).collect(),
        );
        let present: BTreeSet<(String, String)> = ordered
            .iter()
            .chain(&cyclic)
            .map(|v| (v.database.clone(), v.name.clone()))
            .collect();
        self.publish_views(generation, |index| {
            index.retain(|key, _| present.contains(key));
        });
        for view in &cyclic {
            let broken = Planned::Broken(format!(
                "view '{}.{}' reads itself through other views; CREATE OR REPLACE VIEW one of them",
                view.database, view.name
            ));
            let key = (view.database.clone(), view.name.clone());
            self.publish_views(generation, |index| {
                index.insert(key, broken);
            });
        }
        for view in ordered {
            let planned = match self.plan_view(&view).await {
                Ok(table) => Planned::Ready(table),
                Err(e) => Planned::Broken(e.to_string()),
            };
            let key = (view.database, view.name);
            self.publish_views(generation, |index| {
                index.insert(key, planned);
            });
        }
        Ok(())
    }

    fn publish_views(
        &self,
        generation: i64,
        change: impl FnOnce(&mut HashMap<(String, String), Planned>),
    ) {
        if self.snapshot().generation != generation {
            return;
        }
        if let Ok(mut guard) = self.shared.sql_views.write() {
            let mut index = guard.as_ref().clone();
            change(&mut index);
            *guard = Arc::new(index);
        }
    }

    /// `query` planned with `database` as the default database.
    async fn plan_query(&self, database: &str, query: &str) -> Result<LogicalPlan> {
        let mut state = self.state.clone();
        state.config_mut().options_mut().catalog.default_schema = database.to_string();
        let statement = parse::statement(&state, query)?;
        Ok(state.statement_to_plan(statement).await?)
    }

    /// A view planned on this snapshot, its columns checked against those it was created
    /// with.
    async fn plan_view(&self, view: &ViewDef) -> Result<Arc<dyn TableProvider>> {
        let name = format!("{}.{}", view.database, view.name);
        let plan = self
            .plan_query(&view.resolve_in, &view.query)
            .await
            .map_err(|e| {
                let why = e.to_string().replace('\n', " ");
                Error::InvalidArgument(format!(
                    "view '{name}' cannot be planned any more: {why}; CREATE OR REPLACE VIEW \
                 {name} to redefine it"
                ))
            })?;
        let now: Vec<String> = plan
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let then: Vec<String> = view.columns.iter().map(|c| c.name.clone()).collect();
        if now != then {
            return Err(Error::InvalidArgument(format!(
                "view '{name}' was created with columns ({}) but its query now gives ({}); \
                 its base changed: CREATE OR REPLACE VIEW {name} to accept the new columns",
                then.join(", "),
                now.join(", ")
            )));
        }
        Ok(Arc::new(ViewTable::new(plan, Some(view.query.clone()))))
    }

    /// `CREATE [OR REPLACE] VIEW database.name AS query`; unqualified names in the query
    /// resolve in this session's default database, now and whenever the view is read.
    pub(crate) async fn create_view(
        &self,
        database: &str,
        name: &str,
        query: &Query,
        or_replace: bool,
        if_not_exists: bool,
    ) -> Result<String> {
        let text = query.to_string();
        let resolve_in = self.default_database();
        let plan = self.plan_query(&resolve_in, &text).await?;
        let columns = plan
            .schema()
            .fields()
            .iter()
            .map(|f| ViewColumn {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
            })
            .collect();
        let definition = ViewDef {
            database: database.to_string(),
            name: name.to_string(),
            query: text,
            resolve_in,
            columns,
        };
        self.refuse_cycle(&definition).await?;
        if !self
            .catalog()
            .create_view(&definition, or_replace, if_not_exists)
            .await?
        {
            return Ok(format!("view {database}.{name} already exists"));
        }
        Ok(format!("created view {database}.{name}"))
    }

    /// Refuses a definition that would make a view read itself, directly or through
    /// other views.
    async fn refuse_cycle(&self, definition: &ViewDef) -> Result<()> {
        let mut views: Vec<ViewDef> = self
            .catalog()
            .views()
            .await?
            .into_iter()
            .map(|r| r.definition)
            .filter(|v| v.database != definition.database || v.name != definition.name)
            .collect();
        views.push(definition.clone());
        let (_, cyclic) = in_dependency_order(&self.state, views);
        if cyclic
            .iter()
            .any(|v| v.database == definition.database && v.name == definition.name)
        {
            return Err(Error::InvalidArgument(format!(
                "view '{}.{}' would read itself (directly or through other views)",
                definition.database, definition.name
            )));
        }
        Ok(())
    }

    /// `SHOW CREATE VIEW database.name`: the statement that defines it.
    pub(crate) async fn show_create_view(&self, database: &str, name: &str) -> Result<RecordBatch> {
        let view = self
            .catalog()
            .views()
            .await?
            .into_iter()
            .find(|r| r.definition.database == database && r.definition.name == name)
            .ok_or_else(|| no_such_view(database, name))?;
        // Unqualified names resolve where they did when the view was created.
        let d = &view.definition;
        let text = if d.resolve_in == database {
            format!("CREATE VIEW {database}.{name} AS {}", d.query)
        } else {
            format!(
                "/* tables named without a database are in {} */ CREATE VIEW {database}.{name} AS {}",
                d.resolve_in, d.query
            )
        };
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new(
                "create_statement",
                arrow::datatypes::DataType::Utf8,
                false,
            ),
        ]));
        Ok(RecordBatch::try_new(
            schema,
            vec![Arc::new(arrow::array::StringArray::from(vec![text]))],
        )?)
    }
}

/// The error of a statement naming a view that does not exist.
pub(crate) fn no_such_view(database: &str, name: &str) -> Error {
    Error::InvalidArgument(format!(
        "view '{database}.{name}' does not exist; information_schema.tables lists the views \
         (table_type 'VIEW')"
    ))
}
