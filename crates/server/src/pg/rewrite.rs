//! Clients' catalog statements, rewritten into SQL DataFusion plans.
//!
//! psql, SQLAlchemy, Grafana, Metabase and the JDBC driver browse a server through
//! `pg_catalog` and `information_schema` with Postgres idioms DataFusion does not plan:
//! `'t'::regclass`, `x = ANY(array)`, `pg_catalog.`-qualified function names (rewritten by
//! `datafusion-pg-catalog`'s compatibility parser), and a function in `FROM`
//! (`string_to_array(…) s`) and comment lookups through `regclass` casts of computed names
//! (rewritten here). Only statements that read nothing but catalog tables are rewritten:
//! some of these rewrites change answers (a correlated subquery in a select list becomes
//! NULL), which is harmless for a catalog browse and wrong for a query over data.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName, ObjectNamePart,
    OrderBy, OrderByKind, Query, SelectItem, SetExpr, Statement, TableAliasColumnDef, TableFactor,
    Value, ValueWithSpan, Visit, VisitMut, Visitor, VisitorMut, visit_relations_mut,
};
use datafusion::sql::sqlparser::dialect::{GenericDialect, PostgreSqlDialect};
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;

/// How a statement is rewritten for the Postgres catalog: the rewrites to plan, in order,
/// until one plans.
pub(crate) enum Rewrite {
    /// It reads only catalog tables: plan a rewritten statement.
    Always(Vec<String>),
    /// It reads no table (`SELECT current_schema()`): plan a rewritten statement if the
    /// statement as written does not plan.
    IfNeeded(Vec<String>),
}

/// The rewrites of `sql` for the Postgres catalog, `None` when it reads data tables or is
/// not a query.
///
/// Tarn's own idioms are applied first, then the compatibility parser: its last-resort
/// replacements of whole client statements (matched token by token) stub out some parts
/// Tarn answers exactly (Grafana's search-path lookup becomes `''`, so its table list
/// would come back qualified). Where Tarn's version does not plan (a psql statement the
/// parser knows how to stub), the parser's version of the statement as written follows.
pub(crate) fn catalog_rewrite(sql: &str) -> Option<Rewrite> {
    let first = sql.trim_start().get(..4)?.to_ascii_lowercase();
    if first != "sele" && first != "with" {
        return None;
    }
    // What the statement reads, as the client wrote it.
    let mut original = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    if original.len() != 1 {
        return None;
    }
    let (catalog, other) = relations(&original[0]);
    if other > 0 {
        return None;
    }
    let _ = VisitMut::visit(
        &mut original[0],
        &mut PostgresIdioms {
            after_parser: false,
        },
    );
    let mut candidates: Vec<String> = Vec::new();
    for text in [original[0].to_string(), sql.to_string()] {
        if let Some(rewritten) = compatible(&text)
            && !candidates.contains(&rewritten)
        {
            candidates.push(rewritten);
        }
    }
    if candidates.is_empty() {
        return None;
    }
    Some(if catalog == 0 {
        Rewrite::IfNeeded(candidates)
    } else {
        Rewrite::Always(candidates)
    })
}

/// `sql` through the compatibility parser, with Postgres' `information_schema` and Tarn's
/// idioms.
fn compatible(sql: &str) -> Option<String> {
    let mut rewritten = PostgresCompatibilityParser::new().parse(sql).ok()?;
    if rewritten.len() != 1 || !matches!(rewritten[0], Statement::Query(_)) {
        return None;
    }
    let mut rewritten = rewritten.remove(0);
    // Postgres' information_schema, not DataFusion's (Arrow type names).
    let _ = visit_relations_mut(&mut rewritten, |name| {
        if let [schema, _] = name.0.as_mut_slice()
            && let Some(ident) = schema.as_ident()
            && ident.value.eq_ignore_ascii_case("information_schema")
        {
            *schema = ObjectNamePart::Identifier(Ident::new(super::information_schema::SCHEMA));
        }
        ControlFlow::<()>::Continue(())
    });
    let _ = VisitMut::visit(&mut rewritten, &mut PostgresIdioms { after_parser: true });
    Some(rewritten.to_string())
}

/// DataFusion's set-returning functions: in `FROM`, `f(…) AS a` names their one column.
const SET_RETURNING: [&str; 2] = ["generate_series", "range"];

/// Postgres functions that read comments, which Tarn's catalog does not keep for tables
/// and columns: always NULL.
const COMMENTS: [&str; 2] = ["col_description", "obj_description"];

/// The Postgres idioms DataFusion does not plan and the compatibility parser leaves:
/// - a function in `FROM` with an alias names its single column after the alias
///   (`generate_series(1, 3) AS i` has column `i`; `string_to_array(x, ',') s` is one row
///   whose column `s` is the array);
/// - `generate_subscripts(array, 1)` (beside `unnest(array)` in a select list) is
///   `unnest` of the subscripts `1..=cardinality(array)`;
/// - `format('…', …)` with a literal format string is the concatenation it produces;
/// - `user` is `session_user`;
/// - an `ORDER BY` key holding a subquery is computed in the select list (DataFusion
///   plans subqueries there, not in a sort);
/// - `CASE WHEN x IN (SELECT …)` asks an array of the subquery's values;
/// - `col_description(…)` and `obj_description(…)` are NULL without evaluating their
///   arguments, which are usually `format('%I.%I', schema, table)::regclass` (a cast of a
///   computed name that only Postgres resolves).
struct PostgresIdioms {
    /// Whether the compatibility parser has run: sort keys move into the select list and
    /// `IN` subqueries become arrays only after it (its replacements of whole client
    /// statements are matched on the text as written, and it cannot read `EXCLUDE`).
    after_parser: bool,
}

impl VisitorMut for PostgresIdioms {
    type Break = ();

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table {
            name,
            args: Some(args),
            alias: Some(alias),
            ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        if !alias.columns.is_empty() {
            return ControlFlow::Continue(());
        }
        if SET_RETURNING.contains(&function_name(name).as_str()) {
            alias.columns = vec![TableAliasColumnDef::from_name(alias.name.value.clone())];
            return ControlFlow::Continue(());
        }
        let call = format!(
            "{name}({})",
            args.args
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        if let Some(derived) = one_row(&call, &alias.name) {
            *factor = derived;
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if self.after_parser {
            sort_keys_with_subqueries_in_select_list(query);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Case { conditions, .. } = expr
            && self.after_parser
        {
            for when in conditions {
                in_subquery_as_array(&mut when.condition);
            }
        }
        let Expr::Function(function) = expr else {
            return ControlFlow::Continue(());
        };
        let name = function_name(&function.name);
        if name == "generate_subscripts"
            && let FunctionArguments::List(list) = &function.args
            && let [array, dimension] = list.args.as_slice()
            && dimension.to_string() == "1"
            && let Some(subscripts) = parse_expr(&format!(
                "unnest(generate_series(1, CAST(cardinality({array}) AS BIGINT)))"
            ))
        {
            *expr = subscripts;
        } else if name == "format"
            && let Some(formatted) = format_call(&function.args)
        {
            *expr = formatted;
        } else if name == "user" && matches!(function.args, FunctionArguments::None) {
            function.name = ObjectName::from(vec![Ident::new("session_user")]);
        } else if COMMENTS.contains(&name.as_str()) {
            *expr = Expr::Cast {
                kind: datafusion::sql::sqlparser::ast::CastKind::Cast,
                expr: Box::new(Expr::value(datafusion::sql::sqlparser::ast::Value::Null)),
                data_type: datafusion::sql::sqlparser::ast::DataType::Text,
                format: None,
                array: false,
            };
        }
        ControlFlow::Continue(())
    }
}

/// `format('…', args…)` with a literal format string as the concatenation Postgres
/// produces: `%s` is the argument's text ('' for NULL), `%I` its `quote_ident`, `%L` its
/// quoted literal (`NULL` for NULL), `%%` a `%`. `None` (left for DataFusion to refuse)
/// for widths, positions and too few arguments.
fn format_call(args: &FunctionArguments) -> Option<Expr> {
    let FunctionArguments::List(list) = args else {
        return None;
    };
    let (first, rest) = list.args.split_first()?;
    let FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(ValueWithSpan {
        value: Value::SingleQuotedString(template),
        ..
    }))) = first
    else {
        return None;
    };
    let literal = |text: &str| format!("'{}'", text.replace('\'', "''"));
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut args = rest.iter();
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            text.push(c);
            continue;
        }
        let spec = chars.next()?;
        if spec == '%' {
            text.push('%');
            continue;
        }
        let arg = format!("CAST({} AS TEXT)", args.next()?);
        pieces.push(literal(&std::mem::take(&mut text)));
        pieces.push(match spec {
            's' => format!("coalesce({arg}, '')"),
            'I' => format!("quote_ident({arg})"),
            'L' => format!("coalesce('''' || replace({arg}, '''', '''''') || '''', 'NULL')"),
            _ => return None,
        });
    }
    pieces.push(literal(&text));
    parse_expr(&format!("({})", pieces.join(" || ")))
}

/// A query whose `ORDER BY` holds a subquery (`ORDER BY CASE WHEN s IN (SELECT …) THEN 0
/// ELSE 1 END`), which DataFusion plans only in a select list: the keys are computed in
/// the select list of an inner query, sorted on outside and left out of the result.
/// Queries with `DISTINCT`, or whose body is not a single `SELECT`, are left as they are.
fn sort_keys_with_subqueries_in_select_list(query: &mut Query) {
    let Some(OrderBy {
        kind: OrderByKind::Expressions(keys),
        ..
    }) = query.order_by.as_mut()
    else {
        return;
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    if select.distinct.is_some() || !keys.iter().any(|k| has_subquery(&k.expr)) {
        return;
    }
    let mut hidden = Vec::new();
    for key in keys.iter_mut().filter(|k| has_subquery(&k.expr)) {
        let name = Ident::new(format!("__tarn_sort_{}", hidden.len() + 1));
        let expr = std::mem::replace(&mut key.expr, Expr::Identifier(name.clone()));
        select.projection.push(SelectItem::ExprWithAlias {
            expr,
            alias: name.clone(),
        });
        hidden.push(name.to_string());
    }
    let outer = format!(
        "SELECT * EXCLUDE ({}) FROM ({select}) AS __tarn_sorted",
        hidden.join(", ")
    );
    // `EXCLUDE` is DataFusion's (and the generic dialect's), not Postgres'.
    if let Ok(mut statements) = Parser::parse_sql(&GenericDialect {}, &outer)
        && let Some(Statement::Query(outer)) = statements.pop()
    {
        query.body = outer.body;
    }
}

/// Whether `expr` holds a subquery.
fn has_subquery(expr: &Expr) -> bool {
    struct Finds;
    impl Visitor for Finds {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            match expr {
                Expr::Subquery(_) | Expr::InSubquery { .. } | Expr::Exists { .. } => {
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            }
        }
    }
    expr.visit(&mut Finds).is_break()
}

/// `CASE WHEN x IN (SELECT …) THEN …`: DataFusion runs an `IN` subquery only where it
/// can become a join (not inside a select list's `CASE`), so the condition is asked of
/// the subquery's values gathered into one array. Exact as a `CASE` condition, where a
/// NULL answer and a false one both fall through: true only when `x` is not NULL and
/// equals one of the values.
fn in_subquery_as_array(condition: &mut Expr) {
    let Expr::InSubquery {
        expr,
        subquery,
        negated: false,
    } = condition
    else {
        return;
    };
    let text = format!(
        "({expr} IS NOT NULL AND coalesce(array_has((SELECT array_agg(__tarn_in.v) \
         FROM ({subquery}) AS __tarn_in (v)), {expr}), false))"
    );
    if let Some(rewritten) = parse_expr(&text) {
        *condition = rewritten;
    }
}

/// `text` parsed as one expression.
fn parse_expr(text: &str) -> Option<Expr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .ok()?
        .parse_expr()
        .ok()
}

/// The last part of a (possibly `pg_catalog.`-qualified) function name, lower case.
fn function_name(name: &ObjectName) -> String {
    name.0
        .last()
        .and_then(ObjectNamePart::as_ident)
        .map(|i| i.value.to_ascii_lowercase())
        .unwrap_or_default()
}

/// `(SELECT call AS alias) AS alias`: a scalar function in `FROM`, as Postgres reads it.
fn one_row(call: &str, alias: &Ident) -> Option<TableFactor> {
    let sql = format!("SELECT * FROM (SELECT {call} AS {alias}) AS {alias}");
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, &sql).ok()?;
    let Statement::Query(query) = statements.pop()? else {
        return None;
    };
    let SetExpr::Select(select) = *query.body else {
        return None;
    };
    select.from.into_iter().next().map(|from| from.relation)
}

/// How many of the tables `statement` reads are catalog tables (`pg_catalog.*`,
/// `information_schema.*`, unqualified `pg_*`), and how many are not; the statement's own
/// CTEs and the functions called in `FROM` are neither.
fn relations(statement: &Statement) -> (usize, usize) {
    struct Ctes(HashSet<String>);
    impl Visitor for Ctes {
        type Break = ();
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            for cte in query.with.iter().flat_map(|w| &w.cte_tables) {
                self.0.insert(cte.alias.name.value.to_ascii_lowercase());
            }
            ControlFlow::Continue(())
        }
    }
    struct Tables {
        ctes: HashSet<String>,
        catalog: usize,
        other: usize,
    }
    impl Visitor for Tables {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            let TableFactor::Table {
                name, args: None, ..
            } = factor
            else {
                return ControlFlow::Continue(());
            };
            let parts: Vec<String> = name
                .0
                .iter()
                .filter_map(|p| p.as_ident().map(|i| i.value.to_ascii_lowercase()))
                .collect();
            let is_catalog = match parts.as_slice() {
                [table] if self.ctes.contains(table) => return ControlFlow::Continue(()),
                [table] => table.starts_with("pg_"),
                [schema, _] | [_, schema, _] => {
                    schema == "pg_catalog" || schema == "information_schema"
                }
                _ => false,
            };
            if is_catalog {
                self.catalog += 1;
            } else {
                self.other += 1;
            }
            ControlFlow::Continue(())
        }
    }
    let mut ctes = Ctes(HashSet::new());
    let _ = statement.visit(&mut ctes);
    let mut tables = Tables {
        ctes: ctes.0,
        catalog: 0,
        other: 0,
    };
    let _ = statement.visit(&mut tables);
    (tables.catalog, tables.other)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        match catalog_rewrite(sql) {
            Some(Rewrite::Always(s) | Rewrite::IfNeeded(s)) => s.join("\n"),
            None => panic!("not rewritten: {sql}"),
        }
    }

    #[test]
    fn catalog_queries_are_rewritten_and_data_queries_are_not() {
        assert!(matches!(
            catalog_rewrite("SELECT relname FROM pg_catalog.pg_class WHERE oid = 't'::regclass"),
            Some(Rewrite::Always(_))
        ));
        assert!(matches!(
            catalog_rewrite("SELECT n.nspname FROM pg_namespace n"),
            Some(Rewrite::Always(_))
        ));
        assert!(matches!(
            catalog_rewrite("select current_schema()"),
            Some(Rewrite::IfNeeded(_))
        ));
        // A data query keeps its correlated subquery (the rewrite would make it NULL).
        assert!(
            catalog_rewrite(
                "SELECT (SELECT max(b.v) FROM db.b WHERE b.k = a.k) FROM db.a JOIN pg_class c ON true"
            )
            .is_none()
        );
        assert!(catalog_rewrite("SELECT * FROM db.events").is_none());
        assert!(catalog_rewrite("CREATE TABLE x AS SELECT 1").is_none());
        // Functions in FROM are not tables: this is still a catalog query.
        assert!(matches!(
            catalog_rewrite(
                "SELECT table_name FROM information_schema.tables, generate_series(1, 2) AS i"
            ),
            Some(Rewrite::Always(_))
        ));
        // …but a data table beside them is.
        assert!(catalog_rewrite("SELECT * FROM db.t, generate_series(1, 2) AS i").is_none());
    }

    #[test]
    fn functions_in_from_name_their_column_after_the_alias() {
        let sql = rewritten(
            "SELECT s[i] FROM generate_series(1, 3) AS i, string_to_array('a,b', ',') s, \
             pg_namespace",
        );
        assert!(sql.contains("generate_series(1, 3) AS i (i)"), "{sql}");
        assert!(
            sql.contains("(SELECT string_to_array('a,b', ',') AS s) AS s"),
            "{sql}"
        );
        // An alias that already names the columns is left alone.
        let sql = rewritten("SELECT x FROM generate_series(1, 3) AS g(x), pg_namespace");
        assert!(sql.contains("AS g (x)"), "{sql}");
    }

    #[test]
    fn comment_lookups_are_null_without_evaluating_their_arguments() {
        let sql = rewritten(
            "SELECT col_description(format('%I.%I', table_schema, table_name)::regclass::oid, \
             ordinal_position) FROM information_schema.columns",
        );
        assert!(sql.contains("CAST(NULL AS TEXT)"), "{sql}");
        assert!(!sql.to_ascii_lowercase().contains("regclass"), "{sql}");
    }

    #[test]
    fn format_strings_become_concatenations() {
        let sql = rewritten(
            "SELECT format('%I.%I', table_schema, table_name), format('\"%s\" 100%%', udt_name), \
             format('%L', x) FROM information_schema.columns",
        );
        assert!(
            sql.contains(
                "'' || quote_ident(CAST(table_schema AS TEXT)) || '.' || \
                 quote_ident(CAST(table_name AS TEXT)) || ''"
            ),
            "{sql}"
        );
        assert!(
            sql.contains("'\"' || coalesce(CAST(udt_name AS TEXT), '') || '\" 100%'"),
            "{sql}"
        );
        assert!(sql.contains("replace(CAST(x AS TEXT)"), "{sql}");
        // Widths are not rewritten (DataFusion then says it has no format()).
        assert!(
            rewritten("SELECT format('%10s', relname) FROM pg_class").contains("format('%10s'")
        );
    }

    #[test]
    fn user_is_the_session_user() {
        let sql = rewritten("SELECT CASE WHEN nspname = 'x' THEN user END FROM pg_namespace");
        assert!(sql.contains("THEN session_user END"), "{sql}");
    }

    #[test]
    fn sort_keys_with_subqueries_are_computed_in_the_select_list() {
        let sql = rewritten(
            "SELECT relname AS name FROM pg_class ORDER BY CASE WHEN relnamespace IN \
             (SELECT oid FROM pg_namespace) THEN 0 ELSE 1 END, 1 LIMIT 5",
        );
        assert!(
            sql.starts_with("SELECT * EXCLUDE (__tarn_sort_1) FROM (SELECT relname AS name, CASE"),
            "{sql}"
        );
        assert!(
            sql.ends_with("AS __tarn_sorted ORDER BY __tarn_sort_1, 1 LIMIT 5"),
            "{sql}"
        );
    }

    #[test]
    fn in_subqueries_as_case_conditions_ask_an_array() {
        let sql = rewritten(
            "SELECT CASE WHEN nspname IN (SELECT s FROM pg_namespace) THEN 0 ELSE 1 END, \
             CASE WHEN nspname NOT IN (SELECT s FROM pg_namespace) THEN 0 END \
             FROM pg_namespace",
        );
        assert!(
            sql.contains(
                "CASE WHEN (nspname IS NOT NULL AND coalesce(array_has((SELECT \
                 array_agg(__tarn_in.v) FROM (SELECT s FROM pg_catalog.pg_namespace) AS \
                 __tarn_in (v)), nspname), false)) THEN 0"
            ),
            "{sql}"
        );
        // NOT IN answers NULL where a NULL is among the values: left as written.
        assert!(sql.contains("WHEN nspname NOT IN (SELECT"), "{sql}");
    }

    #[test]
    fn subscripts_are_unnested_beside_their_array() {
        let sql = rewritten(
            "SELECT unnest(ix.indkey) AS attnum, generate_subscripts(ix.indkey, 1) AS ord \
             FROM pg_index ix",
        );
        assert!(
            sql.contains(
                "unnest(generate_series(1, CAST(cardinality(ix.indkey) AS BIGINT))) AS ord"
            ),
            "{sql}"
        );
    }

    #[test]
    fn tarn_answers_the_search_path_lookup_the_parser_would_stub() {
        let lookup = "SELECT table_name FROM information_schema.tables WHERE table_schema IN ( \
             SELECT CASE WHEN trim(s[i]) = '\"$user\"' THEN user ELSE trim(s[i]) END FROM \
             generate_series(array_lower(string_to_array(current_setting('search_path'),','),1), \
             array_upper(string_to_array(current_setting('search_path'),','),1)) as i, \
             string_to_array(current_setting('search_path'),',') s)";
        let Some(Rewrite::Always(candidates)) = catalog_rewrite(lookup) else {
            panic!("a catalog query");
        };
        // Tarn's version first, the parser's stub (`IN ('')`) after it.
        assert!(candidates[0].contains("AS s) AS s"), "{candidates:?}");
        assert!(
            candidates.last().is_some_and(|c| c.contains("IN ('')")),
            "{candidates:?}"
        );
    }
}
