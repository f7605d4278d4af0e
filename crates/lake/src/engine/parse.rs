//! Tarn's SQL parsing, in one place: a statement is tokenized once in the session's
//! dialect; the time-travel clauses are taken out of its tokens
//! ([`super::time_travel`]); then [`parse`] reads Tarn's own statements (`REFRESH
//! MATERIALIZED VIEW`, `OPTIMIZE`, `ALTER TABLE … ADD PARTITION … LOCATION`) with sqlparser's parser and
//! hands anything else to DataFusion's parser over the same tokens.
//!
//! Tarn's dialect is sqlparser's generic dialect (DataFusion's default) with corrections
//! until they are made upstream:
//!
//! **`IS [NOT] DISTINCT FROM` binds as tightly as `IS NULL`, tighter than `AND` and
//! `OR`.** sqlparser 0.62 parses the right side of `a IS NOT DISTINCT FROM b AND c < 2` as
//! a whole expression, giving `a IS NOT DISTINCT FROM (b AND c < 2)`, where the SQL
//! standard and PostgreSQL give `(a IS NOT DISTINCT FROM b) AND c < 2`. Tarn's dialect
//! parses the right side at the precedence of `IS`, as sqlparser does for every other
//! comparison. A session configured with another dialect
//! (`datafusion.sql_parser.dialect`) keeps it as it is.

use std::any::TypeId;

use datafusion::error::Result;
use datafusion::execution::context::SessionState;
use datafusion::sql::parser::{DFParserBuilder, Statement};
use datafusion::sql::sqlparser::ast::{Expr, ObjectName};
use datafusion::sql::sqlparser::dialect::{Dialect, GenericDialect, dialect_from_str};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

/// A statement as Tarn reads it: one of Tarn's own, which DataFusion's parser does not
/// take, or one DataFusion's parser takes.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// A statement DataFusion's parser takes.
    Statement(Statement),
    /// `REFRESH MATERIALIZED VIEW [database.]view [FULL]`.
    Refresh { view: ObjectName, full: bool },
    /// `OPTIMIZE [TABLE] t [REWRITE DATA USING BIN_PACK] [WHERE predicate]` (Athena's and
    /// Delta's form): the table's small files rewritten into files near a target size.
    Optimize {
        table: ObjectName,
        predicate: Option<Expr>,
    },
    /// `ALTER TABLE t ADD [IF NOT EXISTS] PARTITION (k = v, …) [LOCATION '…'] …`: Hive's
    /// and Athena's form, where each partition may name the folder its files are in.
    AddPartitions {
        table: ObjectName,
        if_not_exists: bool,
        /// Each partition's `key = value` conditions and its folder, if it names one.
        partitions: Vec<(Vec<Expr>, Option<String>)>,
    },
}

/// The session's dialect: Tarn's for the default `generic`, else the one configured.
fn dialect(state: &SessionState) -> Result<Box<dyn Dialect>> {
    let configured = &state.config().options().sql_parser.dialect;
    match configured.to_string().to_ascii_lowercase().as_str() {
        "generic" => Ok(Box::new(TarnDialect)),
        _ => dialect_from_str(*configured).ok_or_else(|| {
            datafusion::error::DataFusionError::Plan(format!(
                "Unsupported SQL dialect: {configured}"
            ))
        }),
    }
}

/// A statement's tokens in the session's dialect: what [`parse`] reads, after Tarn's
/// token-level clauses (time travel, [`super::time_travel`]) are taken out.
///
/// # Errors
/// The tokenizer's error (an unterminated literal or identifier), with its position.
pub(crate) fn tokens(state: &SessionState, sql: &str) -> Result<Vec<TokenWithSpan>> {
    let dialect = dialect(state)?;
    Tokenizer::new(dialect.as_ref(), sql)
        .tokenize_with_location()
        .map_err(|e| {
            datafusion::error::DataFusionError::SQL(
                Box::new(ParserError::TokenizerError(e.to_string())),
                None,
            )
        })
}

/// Parses one statement from its tokens: Tarn's own statements first, through the same
/// sqlparser parser (so they parse alike in every dialect), then anything DataFusion's
/// parser takes.
///
/// # Errors
/// The parser's errors: a syntax error, several statements, none, an unknown dialect.
pub(crate) fn parse(state: &SessionState, tokens: Vec<TokenWithSpan>) -> Result<Parsed> {
    let options = state.config().options();
    let dialect = dialect(state)?;
    let mut parser = DFParserBuilder::new(tokens)
        .with_dialect(dialect.as_ref())
        .with_recursion_limit(options.sql_parser.recursion_limit.get())
        .build()?;
    if let Some(tarn) = tarn_statement(&mut parser.parser)? {
        return Ok(tarn);
    }
    let mut statements = parser.parse_statements()?;
    if statements.len() > 1 {
        return datafusion::common::not_impl_err!(
            "The context currently only supports a single SQL statement"
        );
    }
    statements
        .pop_front()
        .map(Parsed::Statement)
        .ok_or_else(|| {
            datafusion::error::DataFusionError::Plan(
                "No SQL statements were provided in the query string".into(),
            )
        })
}

/// Parses one statement that DataFusion's parser takes (a view's or a rollup's query).
///
/// # Errors
/// As [`parse`]; and a Tarn statement, which is not a query.
pub(crate) fn statement(state: &SessionState, sql: &str) -> Result<Statement> {
    match parse(state, tokens(state, sql)?)? {
        Parsed::Statement(statement) => Ok(statement),
        _ => datafusion::common::plan_err!("expected a query, found a Tarn statement: {sql}"),
    }
}

/// Tarn's own statements, read with sqlparser's parser; `None` (nothing consumed) for
/// any other statement.
fn tarn_statement(p: &mut Parser) -> std::result::Result<Option<Parsed>, ParserError> {
    if p.parse_keywords(&[Keyword::REFRESH, Keyword::MATERIALIZED, Keyword::VIEW]) {
        let view = p.parse_object_name(false)?;
        let full = p.parse_keyword(Keyword::FULL);
        end_of_statement(p)?;
        return Ok(Some(Parsed::Refresh { view, full }));
    }
    if p.parse_keyword(Keyword::OPTIMIZE) {
        let _table = p.parse_keyword(Keyword::TABLE);
        let table = p.parse_object_name(false)?;
        // Athena's `REWRITE DATA USING BIN_PACK` names the one way Tarn rewrites.
        if parse_word(p, "REWRITE") {
            p.expect_keywords(&[Keyword::DATA, Keyword::USING])?;
            if !parse_word(p, "BIN_PACK") {
                return p.expected("BIN_PACK", p.peek_token());
            }
        }
        let predicate = if p.parse_keyword(Keyword::WHERE) {
            Some(p.parse_expr()?)
        } else {
            None
        };
        end_of_statement(p)?;
        return Ok(Some(Parsed::Optimize { table, predicate }));
    }
    // `ALTER TABLE t ADD [IF NOT EXISTS] PARTITION`: the start decides, and is read again
    // by DataFusion's parser when it is another statement.
    let add = p.maybe_parse(|p| {
        p.expect_keywords(&[Keyword::ALTER, Keyword::TABLE])?;
        let table = p.parse_object_name(false)?;
        p.expect_keyword_is(Keyword::ADD)?;
        let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
        if !p.peek_keyword(Keyword::PARTITION) {
            return p.expected("PARTITION", p.peek_token());
        }
        Ok((table, if_not_exists))
    })?;
    let Some((table, if_not_exists)) = add else {
        return Ok(None);
    };
    let mut partitions = Vec::new();
    while p.parse_keyword(Keyword::PARTITION) {
        p.expect_token(&Token::LParen)?;
        let spec = p.parse_comma_separated(Parser::parse_expr)?;
        p.expect_token(&Token::RParen)?;
        let location = if p.parse_keyword(Keyword::LOCATION) {
            Some(p.parse_literal_string()?)
        } else {
            None
        };
        partitions.push((spec, location));
    }
    end_of_statement(p)?;
    Ok(Some(Parsed::AddPartitions {
        table,
        if_not_exists,
        partitions,
    }))
}

/// Consumes the next token when it is the word `word` (one sqlparser has no keyword for).
fn parse_word(p: &mut Parser, word: &str) -> bool {
    let matches = matches!(&p.peek_token_ref().token, Token::Word(w)
        if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word));
    if matches {
        p.next_token();
    }
    matches
}

/// The end of the statement (an optional `;`), or the parser's error at what follows.
fn end_of_statement(p: &mut Parser) -> std::result::Result<(), ParserError> {
    let _optional = p.consume_token(&Token::SemiColon);
    match p.peek_token_ref().token {
        Token::EOF => Ok(()),
        _ => p.expected("end of statement", p.peek_token()),
    }
}

/// sqlparser's generic dialect with `IS [NOT] DISTINCT FROM` at its standard precedence
/// (see the module documentation). It is the generic dialect to the parser in every other
/// respect: it answers as that dialect for every setting the generic dialect overrides,
/// and gives its type to the parser's dialect checks.
#[derive(Debug, Default)]
pub(crate) struct TarnDialect;

/// Settings the generic dialect overrides, answered as it answers them.
macro_rules! as_generic {
    ($($name:ident),* $(,)?) => {
        $(fn $name(&self) -> bool {
            GenericDialect.$name()
        })*
    };
}

impl Dialect for TarnDialect {
    fn dialect(&self) -> TypeId {
        TypeId::of::<GenericDialect>()
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        GenericDialect.is_delimited_identifier_start(ch)
    }

    fn is_identifier_start(&self, ch: char) -> bool {
        GenericDialect.is_identifier_start(ch)
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        GenericDialect.is_identifier_part(ch)
    }

    fn parse_infix(
        &self,
        parser: &mut Parser,
        expr: &Expr,
        precedence: u8,
    ) -> Option<std::result::Result<Expr, ParserError>> {
        let keyword = |n: usize| match &parser.peek_nth_token_ref(n).token {
            Token::Word(w) => Some(w.keyword),
            _ => None,
        };
        let negated = match (keyword(0), keyword(1), keyword(2), keyword(3)) {
            (Some(Keyword::IS), Some(Keyword::DISTINCT), Some(Keyword::FROM), _) => false,
            (
                Some(Keyword::IS),
                Some(Keyword::NOT),
                Some(Keyword::DISTINCT),
                Some(Keyword::FROM),
            ) => true,
            _ => return GenericDialect.parse_infix(parser, expr, precedence),
        };
        // `precedence` is that of the `IS` ahead: the right side takes only what binds
        // tighter, as for `=`.
        parser.expect_keyword_is(Keyword::IS).ok()?;
        if negated {
            parser.expect_keyword_is(Keyword::NOT).ok()?;
        }
        parser.expect_keyword_is(Keyword::DISTINCT).ok()?;
        parser.expect_keyword_is(Keyword::FROM).ok()?;
        let left = Box::new(expr.clone());
        Some(parser.parse_subexpr(precedence).map(|right| {
            if negated {
                Expr::IsNotDistinctFrom(left, Box::new(right))
            } else {
                Expr::IsDistinctFrom(left, Box::new(right))
            }
        }))
    }

    as_generic!(
        supports_unicode_string_literal,
        supports_partition_by_after_order_by,
        supports_array_join_syntax,
        supports_group_by_expr,
        supports_group_by_with_modifier,
        supports_left_associative_joins_without_parens,
        supports_connect_by,
        supports_match_recognize,
        supports_pipe_operator,
        supports_start_transaction_modifier,
        supports_window_function_null_treatment_arg,
        supports_dictionary_syntax,
        supports_window_clause_named_window_reference,
        supports_parenthesized_set_variables,
        supports_select_wildcard_except,
        support_map_literal_syntax,
        allow_extract_custom,
        allow_extract_single_quotes,
        supports_extract_comma_syntax,
        supports_create_view_comment_syntax,
        supports_parens_around_table_factor,
        supports_values_as_table_factor,
        supports_create_index_with_clause,
        supports_explain_with_utility_options,
        supports_limit_comma,
        supports_update_order_by,
        supports_from_first_select,
        supports_projection_trailing_commas,
        supports_asc_desc_in_column_definition,
        supports_try_convert,
        supports_bitwise_shift_operators,
        supports_comment_on,
        supports_load_extension,
        supports_named_fn_args_with_assignment_operator,
        supports_struct_literal,
        supports_empty_projections,
        supports_nested_comments,
        supports_multiline_comment_hints,
        supports_user_host_grantee,
        supports_string_escape_constant,
        supports_array_typedef_with_brackets,
        supports_match_against,
        supports_set_names,
        supports_comma_separated_set_assignments,
        supports_filter_during_aggregation,
        supports_select_wildcard_exclude,
        supports_data_type_signed_suffix,
        supports_interval_options,
        supports_quote_delimited_string,
        supports_select_wildcard_replace,
        supports_select_wildcard_ilike,
        supports_select_wildcard_rename,
        supports_optimize_table,
        supports_install,
        supports_detach,
        supports_prewhere,
        supports_with_fill,
        supports_limit_by,
        supports_interpolate,
        supports_settings,
        supports_select_format,
        supports_comment_optimizer_hint,
        supports_constraint_keyword_without_name,
        supports_key_column_option,
        supports_comma_separated_trim,
        supports_cte_without_as,
        supports_select_item_multi_column_alias,
        supports_xml_expressions,
    );
}

#[cfg(test)]
mod tests {
    use std::ops::ControlFlow;

    use super::*;
    use datafusion::sql::sqlparser::ast::visit_expressions_mut;

    /// The statement as Tarn parses it.
    fn parsed(sql: &str) -> Statement {
        let ctx = datafusion::prelude::SessionContext::new();
        statement(&ctx.state(), sql).expect("parses")
    }

    /// Tarn's own statements, in the default dialect and in another one.
    #[test]
    fn tarn_statements_parse_in_every_dialect() {
        for dialect in ["generic", "postgresql"] {
            let ctx = datafusion::prelude::SessionContext::new();
            let mut state = ctx.state();
            state.config_mut().options_mut().sql_parser.dialect = dialect.parse().unwrap();
            let parse = |sql: &str| parse(&state, tokens(&state, sql).unwrap());
            match parse("refresh materialized view web.\"Hourly\" FULL;").unwrap() {
                Parsed::Refresh { view, full } => {
                    assert_eq!(view.to_string(), "web.\"Hourly\"");
                    assert!(full);
                }
                other => panic!("{other:?}"),
            }
            match parse(
                "ALTER TABLE t ADD IF NOT EXISTS PARTITION (dt = '1') LOCATION 's3://b/one/' \
                 PARTITION (dt = '2') PARTITION (dt = 'it''s', h = 3) location 's3://b/o''neil'",
            )
            .unwrap()
            {
                Parsed::AddPartitions {
                    table,
                    if_not_exists,
                    partitions,
                } => {
                    assert_eq!(table.to_string(), "t");
                    assert!(if_not_exists);
                    let specs: Vec<String> = partitions
                        .iter()
                        .map(|(spec, _)| {
                            spec.iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .collect();
                    assert_eq!(specs, ["dt = '1'", "dt = '2'", "dt = 'it''s', h = 3"]);
                    let locations: Vec<Option<&str>> =
                        partitions.iter().map(|(_, l)| l.as_deref()).collect();
                    assert_eq!(
                        locations,
                        [Some("s3://b/one/"), None, Some("s3://b/o'neil")]
                    );
                }
                other => panic!("{other:?}"),
            }
            for (sql, table, predicate) in [
                ("optimize events", "events", None),
                (
                    "OPTIMIZE TABLE web.events REWRITE DATA USING bin_pack WHERE day >= 3;",
                    "web.events",
                    Some("day >= 3"),
                ),
                (
                    "OPTIMIZE events WHERE hour = 1 AND day IN (1, 2)",
                    "events",
                    Some("hour = 1 AND day IN (1, 2)"),
                ),
            ] {
                match parse(sql).unwrap() {
                    Parsed::Optimize {
                        table: t,
                        predicate: p,
                    } => {
                        assert_eq!(t.to_string(), table);
                        assert_eq!(p.map(|p| p.to_string()).as_deref(), predicate);
                    }
                    other => panic!("{other:?}"),
                }
            }
            let error = parse("OPTIMIZE events REWRITE DATA USING SORT").unwrap_err();
            assert!(error.to_string().contains("BIN_PACK"), "{error}");
            let error = parse("OPTIMIZE events WHERE").unwrap_err();
            assert!(error.to_string().contains("expression"), "{error}");
            // Malformed: the parser's own message, at the place.
            let error = parse("REFRESH MATERIALIZED VIEW v FULL NOW").unwrap_err();
            assert!(
                error.to_string().contains("end of statement, found: NOW"),
                "{error}"
            );
            let error = parse("ALTER TABLE t ADD PARTITION (dt = '1') LOCATION").unwrap_err();
            assert!(error.to_string().contains("literal string"), "{error}");
            // Other statements, including other ALTER TABLEs, are DataFusion's parser's.
            for sql in [
                "ALTER TABLE t DROP PARTITION (dt = '1')",
                "SELECT 'REFRESH MATERIALIZED VIEW v' AS location",
            ] {
                assert!(matches!(parse(sql).unwrap(), Parsed::Statement(_)), "{sql}");
            }
        }
    }

    /// The tree of `statement` without the parentheses written in it and without places
    /// in the text (which parentheses move).
    fn tree(mut statement: Statement) -> String {
        if let Statement::Explain(e) = &mut statement {
            statement = *e.statement.clone();
        }
        let Statement::Statement(mut s) = statement else {
            panic!("not a plain statement");
        };
        let _ = visit_expressions_mut(s.as_mut(), |expr: &mut Expr| {
            if let Expr::Nested(inner) = expr {
                *expr = *inner.clone();
            }
            ControlFlow::<()>::Continue(())
        });
        let mut tree = format!("{s:?}");
        while let Some(at) = tree.find("span: Span(") {
            let end = tree[at..].find("))").map_or(tree.len(), |e| at + e + 2);
            tree.replace_range(at..end, "");
        }
        tree
    }

    fn same(a: &str, b: &str) {
        assert_eq!(tree(parsed(a)), tree(parsed(b)), "{a}  vs  {b}");
    }

    #[test]
    fn distinct_from_binds_tighter_than_and_and_or() {
        same(
            "SELECT 1 WHERE a IS NOT DISTINCT FROM b AND c < 2",
            "SELECT 1 WHERE (a IS NOT DISTINCT FROM b) AND c < 2",
        );
        same(
            "SELECT 1 WHERE a IS DISTINCT FROM b OR c AND d",
            "SELECT 1 WHERE (a IS DISTINCT FROM b) OR (c AND d)",
        );
        same(
            "SELECT 1 WHERE a IS NOT DISTINCT FROM b AND c IS NOT DISTINCT FROM d OR e",
            "SELECT 1 WHERE ((a IS NOT DISTINCT FROM b) AND (c IS NOT DISTINCT FROM d)) OR e",
        );
        same(
            "SELECT 1 WHERE NOT a IS DISTINCT FROM b AND c",
            "SELECT 1 WHERE (NOT (a IS DISTINCT FROM b)) AND c",
        );
        same(
            "SELECT 1 WHERE a IS DISTINCT FROM b IS NULL",
            "SELECT 1 WHERE (a IS DISTINCT FROM b) IS NULL",
        );
        // Comparisons and arithmetic bind tighter still, and parentheses are kept.
        same(
            "SELECT 1 WHERE a IS NOT DISTINCT FROM b + 1",
            "SELECT 1 WHERE a IS NOT DISTINCT FROM (b + 1)",
        );
        let kept = format!(
            "{:?}",
            parsed("SELECT 1 WHERE a IS NOT DISTINCT FROM (b AND c)")
        );
        assert!(kept.contains("IsNotDistinctFrom(") && kept.contains("Nested(BinaryOp"));
        same(
            "EXPLAIN SELECT 1 FROM t JOIN u ON t.a IS NOT DISTINCT FROM u.a AND u.b < 2",
            "EXPLAIN SELECT 1 FROM t JOIN u ON (t.a IS NOT DISTINCT FROM u.a) AND u.b < 2",
        );
    }

    /// Everything else parses exactly as with the generic dialect.
    #[test]
    fn other_statements_parse_as_with_the_generic_dialect() {
        let generic = |sql: &str| {
            DFParserBuilder::new(sql)
                .with_dialect(&GenericDialect)
                .build()
                .and_then(|mut p| p.parse_statement())
                .map(|s| format!("{s:?}"))
                .map_err(|e| e.to_string())
        };
        let tarn = |sql: &str| {
            DFParserBuilder::new(sql)
                .with_dialect(&TarnDialect)
                .build()
                .and_then(|mut p| p.parse_statement())
                .map(|s| format!("{s:?}"))
                .map_err(|e| e.to_string())
        };
        let mut corpus: Vec<String> = [
            include_str!("../../../../benches/tpch/q01.sql"),
            include_str!("../../../../benches/tpch/q02.sql"),
            include_str!("../../../../benches/tpch/q08.sql"),
            include_str!("../../../../benches/tpch/q13.sql"),
            include_str!("../../../../benches/tpch/q15.sql"),
            include_str!("../../../../benches/tpch/q22.sql"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        corpus.extend(
            [
                "SELECT `a`, \"b\", #c, x::int, {'k': 1}, [1, 2][1] FROM t LIMIT 1, 2",
                "SELECT * EXCLUDE (a) FROM t WHERE a IS NULL AND b IS TRUE OR c IN (1, 2)",
                "SELECT a FROM t GROUP BY ROLLUP (a, b) HAVING count(*) FILTER (WHERE b) > 1",
                "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/x'",
                "COPY (SELECT 1) TO '/tmp/x.parquet'",
                "INSERT INTO t SELECT * FROM u",
                "SELECT 1 <> 2, 1 << 2, 'a' LIKE 'b' ESCAPE '!', a BETWEEN 1 AND 2",
                "SELECT this is not sql",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        for sql in &corpus {
            assert_eq!(tarn(sql), generic(sql), "{sql}");
        }
    }
}
