//! Time travel in SQL: `FROM t VERSION AS OF 3` and `FROM t TIMESTAMP AS OF '2024-05-01
//! 12:00:00'`, as Spark and Databricks write it, and `FOR VERSION AS OF` / `FOR TIMESTAMP AS
//! OF TIMESTAMP '…'` as Trino writes it.
//!
//! DataFusion's planner has no table versions, so the clause is taken out of the
//! statement's tokens (the tokens Tarn's parser then reads, [`super::parse`]): the table's name becomes the quoted name
//! `"t@v3"`, which the catalog resolves to that version of the table, and the name as
//! written stays as the alias, so `t.col` still means what it said. A timestamp is turned
//! into the version it selects before the statement is planned, so a plan (and a cached
//! result) always names a fixed version.

use datafusion::sql::sqlparser::keywords::{Keyword, RESERVED_FOR_TABLE_ALIAS};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Whitespace, Word};

/// Which version a clause asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    Version(u64),
    /// The instant as written (without quotes).
    Timestamp(String),
}

/// One `… AS OF …` clause after a table name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// The database as written before the table's name, if any (normalised like
    /// DataFusion's identifiers: unquoted names are lower-cased).
    pub database: Option<String>,
    pub table: String,
    pub spec: Spec,
    /// Token index of the table's name, and the token range of the clause.
    name_at: usize,
    start: usize,
    end: usize,
    has_alias: bool,
}

/// A statement's tokens with its time-travel clauses found.
#[derive(Debug)]
pub struct Found {
    tokens: Vec<TokenWithSpan>,
    pub clauses: Vec<Clause>,
}

/// The name under which the catalog serves `table` at `version`.
pub fn versioned_name(table: &str, version: u64) -> String {
    format!("{table}@v{version}")
}

/// Splits a name made by [`versioned_name`] into the table's name and the version.
pub fn split_versioned(name: &str) -> Option<(&str, u64)> {
    let (table, version) = name.rsplit_once("@v")?;
    let version = version.parse().ok()?;
    (!table.is_empty()).then_some((table, version))
}

/// Finds the time-travel clauses of a statement's tokens; `None` when it has none.
pub fn find(tokens: &[TokenWithSpan]) -> Option<Found> {
    let sig: Vec<usize> = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| !matches!(t.token, Token::Whitespace(_)))
        .map(|(i, _)| i)
        .collect();
    let at = |k: usize| sig.get(k).map(|i| &tokens[*i].token);
    let keyword = |k: usize, kw: Keyword| matches!(at(k), Some(Token::Word(w)) if w.keyword == kw && w.quote_style.is_none());
    let mut clauses = Vec::new();
    for k in 1..sig.len() {
        let is_version = keyword(k, Keyword::VERSION);
        if !(is_version || keyword(k, Keyword::TIMESTAMP))
            || !keyword(k + 1, Keyword::AS)
            || !keyword(k + 2, Keyword::OF)
        {
            continue;
        }
        let (spec, after) = if is_version {
            match at(k + 3) {
                Some(Token::Number(n, false)) => match n.parse::<u64>() {
                    Ok(v) => (Spec::Version(v), k + 4),
                    Err(_) => continue,
                },
                _ => continue,
            }
        } else {
            let value_at = if keyword(k + 3, Keyword::TIMESTAMP) {
                k + 4
            } else {
                k + 3
            };
            match at(value_at) {
                Some(Token::SingleQuotedString(s)) => (Spec::Timestamp(s.clone()), value_at + 1),
                _ => continue,
            }
        };
        let (start, name_k) = if k >= 2 && keyword(k - 1, Keyword::FOR) {
            (k - 1, k - 2)
        } else {
            (k, k - 1)
        };
        // `FROM [db.]name CLAUSE`, or with the alias first: `FROM [db.]name [AS] alias CLAUSE`.
        let table_at = |name_k: usize| -> Option<(Option<String>, String)> {
            let Some(Token::Word(name)) = at(name_k) else {
                return None;
            };
            let (database, before) = if name_k >= 2 && matches!(at(name_k - 1), Some(Token::Period))
            {
                match at(name_k - 2) {
                    Some(Token::Word(db)) => (Some(normalise(db)), name_k.checked_sub(3)),
                    _ => return None,
                }
            } else {
                (None, name_k.checked_sub(1))
            };
            // Only a table in a FROM list or a JOIN.
            let b = before?;
            (keyword(b, Keyword::FROM) || keyword(b, Keyword::JOIN) || at(b) == Some(&Token::Comma))
                .then(|| (database, normalise(name)))
        };
        let is_alias = |k: usize| {
            matches!(at(k), Some(Token::Word(w)) if w.quote_style.is_some()
                || !RESERVED_FOR_TABLE_ALIAS.contains(&w.keyword))
        };
        let alias_after = match at(after) {
            Some(Token::Word(w)) => {
                w.quote_style.is_some()
                    || w.keyword == Keyword::AS
                    || !RESERVED_FOR_TABLE_ALIAS.contains(&w.keyword)
            }
            _ => false,
        };
        let (name_k, database, table, has_alias) = if let Some((db, t)) = table_at(name_k) {
            (name_k, db, t, alias_after)
        } else if name_k >= 1 && is_alias(name_k) {
            let before_alias = if name_k >= 2 && keyword(name_k - 1, Keyword::AS) {
                name_k - 2
            } else {
                name_k - 1
            };
            match table_at(before_alias) {
                Some((db, t)) => (before_alias, db, t, true),
                None => continue,
            }
        } else {
            continue;
        };
        clauses.push(Clause {
            database,
            table,
            spec,
            name_at: sig[name_k],
            start: sig[start],
            end: sig.get(after).copied().unwrap_or(tokens.len()),
            has_alias,
        });
    }
    (!clauses.is_empty()).then(|| Found {
        tokens: tokens.to_vec(),
        clauses,
    })
}

fn normalise(word: &Word) -> String {
    match word.quote_style {
        Some(_) => word.value.clone(),
        None => word.value.to_lowercase(),
    }
}

impl Found {
    /// The statement's tokens with each clause replaced by its table's versioned name,
    /// `versions` giving the version of each clause in order.
    pub fn apply(self, versions: &[u64]) -> Vec<TokenWithSpan> {
        let space = |out: &mut Vec<TokenWithSpan>| {
            if !matches!(out.last(), Some(t) if matches!(t.token, Token::Whitespace(_))) {
                out.push(TokenWithSpan::wrap(Token::Whitespace(Whitespace::Space)));
            }
        };
        let mut out = Vec::with_capacity(self.tokens.len() + 2 * self.clauses.len());
        let mut i = 0;
        let mut clauses = self.clauses.iter().zip(versions).peekable();
        while i < self.tokens.len() {
            match clauses.peek() {
                Some((c, v)) if c.name_at == i => {
                    out.push(TokenWithSpan::new(
                        Token::Word(Word {
                            value: versioned_name(&c.table, **v),
                            quote_style: Some('"'),
                            keyword: Keyword::NoKeyword,
                        }),
                        self.tokens[i].span,
                    ));
                    // What sat between the name and the clause (spaces), then the alias.
                    out.extend_from_slice(&self.tokens[i + 1..c.start]);
                    if !c.has_alias {
                        space(&mut out);
                        out.push(TokenWithSpan::wrap(Token::make_keyword("AS")));
                        space(&mut out);
                        out.push(self.tokens[c.name_at].clone());
                    }
                    space(&mut out);
                    i = c.end;
                    clauses.next();
                }
                _ => {
                    out.push(self.tokens[i].clone());
                    i += 1;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;

    fn find(sql: &str) -> Option<Found> {
        let tokens = Tokenizer::new(&GenericDialect, sql)
            .tokenize_with_location()
            .unwrap();
        super::find(&tokens)
    }

    fn text(tokens: &[TokenWithSpan]) -> String {
        tokens.iter().map(|t| t.token.to_string()).collect()
    }

    fn rewrite(sql: &str, versions: &[u64]) -> String {
        find(sql)
            .map(|f| text(&f.apply(versions)))
            .unwrap_or_default()
    }

    #[test]
    fn version_and_timestamp_clauses_become_versioned_names() {
        assert_eq!(
            rewrite("SELECT * FROM web.Sales VERSION AS OF 3 WHERE x = 1", &[3]),
            "SELECT * FROM web.\"sales@v3\" AS Sales WHERE x = 1"
        );
        let found = find("select count(*) from sales for timestamp as of timestamp '2024-05-01 12:00:00' s join t on s.a = t.a").unwrap();
        assert_eq!(found.clauses.len(), 1);
        assert_eq!(found.clauses[0].database, None);
        assert_eq!(
            found.clauses[0].spec,
            Spec::Timestamp("2024-05-01 12:00:00".into())
        );
        assert_eq!(
            text(&found.apply(&[7])),
            "select count(*) from \"sales@v7\" s join t on s.a = t.a"
        );
        // The alias before the clause.
        assert_eq!(
            rewrite(
                "SELECT s.a FROM sales AS s FOR VERSION AS OF 2 WHERE s.a > 0",
                &[2]
            ),
            "SELECT s.a FROM \"sales@v2\" AS s WHERE s.a > 0"
        );
        assert_eq!(
            rewrite("SELECT * FROM sales s VERSION AS OF 2", &[2]),
            "SELECT * FROM \"sales@v2\" s "
        );
        // Two clauses, the second after a comma.
        assert_eq!(
            rewrite(
                "SELECT 1 FROM a VERSION AS OF 1, \"B\" TIMESTAMP AS OF '2024-01-01'",
                &[1, 2]
            ),
            "SELECT 1 FROM \"a@v1\" AS a , \"B@v2\" AS \"B\" "
        );
        // Literals stay the tokens they were.
        let applied = find("SELECT * FROM sales VERSION AS OF 2 WHERE name = 'O''Brien'")
            .unwrap()
            .apply(&[2]);
        assert!(
            applied
                .iter()
                .any(|t| t.token == Token::SingleQuotedString("O'Brien".into()))
        );
        let found = find("SELECT 1 FROM \"a\"\"b\" VERSION AS OF 1").unwrap();
        assert_eq!(found.clauses[0].table, "a\"b");
        let found = find("SELECT 1 FROM s TIMESTAMP AS OF 'it''s' x").unwrap();
        assert_eq!(found.clauses[0].spec, Spec::Timestamp("it's".into()));
    }

    #[test]
    fn other_text_is_left_alone() {
        assert!(find("SELECT * FROM sales").is_none());
        // In a string, or not after a table name.
        assert!(find("SELECT 'x VERSION AS OF 3' FROM sales").is_none());
        assert!(find("SELECT CAST(x AS timestamp) AS of FROM t").is_none());
        assert_eq!(split_versioned("sales@v12"), Some(("sales", 12)));
        assert_eq!(split_versioned("sales"), None);
        assert_eq!(split_versioned("@v1"), None);
    }
}
