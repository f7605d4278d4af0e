//! `COPY … TO STDOUT`: a query's or a table's rows in Postgres' text or CSV copy format,
//! as psql's `\copy … to` and drivers' copy APIs (psycopg's `cursor.copy`, pgjdbc's
//! `CopyManager`) read them. The query runs through the engine's one lifecycle like any
//! other; each row is encoded by `arrow-pg` with pgwire's copy encoder, so values read as
//! they do in a text-format result. `COPY … FROM` (Tarn ingests through `INSERT` and
//! Flight SQL) and the binary copy format are refused with an error saying so.

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_postgres::arrow_pg::datatypes::arrow_schema_to_pg_fields;
use datafusion_postgres::arrow_pg::encoder::encode_value;
use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::results::{
    CopyCsvOptions, CopyEncoder, CopyResponse, CopyTextOptions, FieldInfo, Response,
};
use datafusion_postgres::pgwire::error::PgWireResult;
use datafusion_postgres::pgwire::messages::copy::CopyData;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::error::{cancelled, pg_error};
use tarn_lake::error::{Error, Result};

/// A `COPY … TO STDOUT` statement: the query whose rows it sends, and how.
#[derive(Debug, PartialEq)]
pub(crate) struct CopyOut {
    /// The rows to send, as a query.
    pub query: String,
    pub csv: bool,
    pub header: bool,
    pub delimiter: Option<char>,
    pub null: Option<String>,
    pub quote: Option<char>,
    pub escape: Option<char>,
}

/// `sql` as a `COPY … TO STDOUT`, `None` when it is not a `COPY`.
///
/// # Errors
/// [`Error::InvalidArgument`] for a `COPY` Tarn does not serve, saying what it serves.
pub(crate) fn parse(sql: &str) -> Result<Option<CopyOut>> {
    let starts_with_copy = sql
        .trim_start()
        .get(..4)
        .is_some_and(|w| w.eq_ignore_ascii_case("copy"));
    if !starts_with_copy {
        return Ok(None);
    }
    let statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .map_err(|e| Error::Sql(format!("{e}")))?
        .pop();
    let Some(Statement::Copy {
        source,
        to,
        target,
        options,
        legacy_options,
        ..
    }) = statement
    else {
        return Ok(None);
    };
    if !to || !matches!(target, CopyTarget::Stdout) {
        return Err(Error::InvalidArgument(
            "only COPY … TO STDOUT is served over Postgres (psql's \\copy … to 'file' uses \
             it); write rows with INSERT, or bulk-ingest through Flight SQL"
                .into(),
        ));
    }
    let query = match source {
        CopySource::Query(query) => query.to_string(),
        CopySource::Table {
            table_name,
            columns,
        } if columns.is_empty() => format!("SELECT * FROM {table_name}"),
        CopySource::Table {
            table_name,
            columns,
        } => {
            let columns: Vec<String> = columns.iter().map(ToString::to_string).collect();
            format!("SELECT {} FROM {table_name}", columns.join(", "))
        }
    };
    let mut copy = CopyOut {
        query,
        csv: false,
        header: false,
        delimiter: None,
        null: None,
        quote: None,
        escape: None,
    };
    for option in options {
        copy.apply(option)?;
    }
    for option in legacy_options {
        copy.apply_legacy(option)?;
    }
    if copy.header && !copy.csv {
        return Err(Error::InvalidArgument(
            "COPY HEADER is available only in CSV mode".into(),
        ));
    }
    Ok(Some(copy))
}

impl CopyOut {
    fn apply(&mut self, option: CopyOption) -> Result<()> {
        match option {
            CopyOption::Format(name) => match name.value.to_ascii_lowercase().as_str() {
                "text" => self.csv = false,
                "csv" => self.csv = true,
                other => return Err(unsupported(&format!("FORMAT {other}"))),
            },
            CopyOption::Delimiter(c) => self.delimiter = Some(c),
            CopyOption::Null(text) => self.null = Some(text),
            CopyOption::Header(on) => self.header = on,
            CopyOption::Quote(c) => self.quote = Some(c),
            CopyOption::Escape(c) => self.escape = Some(c),
            CopyOption::Encoding(name) if name.eq_ignore_ascii_case("utf8") => {}
            CopyOption::Encoding(name) if name.eq_ignore_ascii_case("utf-8") => {}
            other => return Err(unsupported(&other.to_string())),
        }
        Ok(())
    }

    fn apply_legacy(&mut self, option: CopyLegacyOption) -> Result<()> {
        match option {
            CopyLegacyOption::Csv(options) => {
                self.csv = true;
                for option in options {
                    match option {
                        CopyLegacyCsvOption::Header => self.header = true,
                        CopyLegacyCsvOption::Quote(c) => self.quote = Some(c),
                        CopyLegacyCsvOption::Escape(c) => self.escape = Some(c),
                        other => return Err(unsupported(&other.to_string())),
                    }
                }
            }
            CopyLegacyOption::Delimiter(c) => self.delimiter = Some(c),
            CopyLegacyOption::Null(text) => self.null = Some(text),
            other => return Err(unsupported(&other.to_string())),
        }
        Ok(())
    }

    /// The rows of `stream` as copy data, stopping with an error when the statement is
    /// cancelled.
    pub(crate) fn response(
        &self,
        stream: SendableRecordBatchStream,
        cancel: &CancellationToken,
    ) -> Result<Response> {
        let schema = stream.schema();
        let fields = Arc::new(
            arrow_schema_to_pg_fields(&schema, &Format::UnifiedText, None)
                .map_err(|e| Error::Internal(format!("describing the result: {e}")))?,
        );
        let header = self.header.then(|| self.header_line(&fields));
        let mut encoder = self.encoder(&fields);
        let columns = fields.len();
        let stopped = cancel.clone();
        let rows = stream
            .take_until(cancel.clone().cancelled_owned())
            .map(move |batch| -> Vec<PgWireResult<CopyData>> {
                match batch
                    .map_err(Error::from)
                    .and_then(|b| super::encode::decimals_for_wire(b, &fields))
                {
                    Ok(batch) => encode(&batch, &fields, &mut encoder),
                    Err(e) => vec![Err(pg_error(&e))],
                }
            })
            .flat_map(futures::stream::iter)
            .chain(futures::stream::iter(
                std::iter::from_fn(move || {
                    // Once, after the rows: an error if they stopped for a cancel.
                    stopped.is_cancelled().then(|| Err(pg_error(&cancelled())))
                })
                .take(1),
            ));
        // The header goes out with the first row (alone when there is none): the client's
        // row count is the number of copy-data messages.
        let pending = Arc::new(std::sync::Mutex::new(header));
        let unsent = Arc::clone(&pending);
        let take = |header: &std::sync::Mutex<Option<CopyData>>| {
            header.lock().ok().and_then(|mut h| h.take())
        };
        let data = rows
            .map(move |row| match (take(&pending), row) {
                (Some(header), Ok(row)) => {
                    let mut joined = bytes::BytesMut::from(header.data.as_ref());
                    joined.extend_from_slice(&row.data);
                    Ok(CopyData::new(joined.freeze()))
                }
                (_, row) => row,
            })
            .chain(futures::stream::iter(
                std::iter::from_fn(move || take(&unsent).map(Ok)).take(1),
            ));
        Ok(Response::CopyOut(CopyResponse::new(0, columns, data)))
    }

    fn encoder(&self, fields: &Arc<Vec<FieldInfo>>) -> CopyEncoder {
        if self.csv {
            let mut options = CopyCsvOptions::default();
            if let Some(c) = self.delimiter {
                options.delimiter = c.to_string().into();
            }
            if let Some(text) = &self.null {
                options.null_string = text.as_str().into();
            }
            if let Some(c) = self.quote {
                options.quote = c.to_string().into();
            }
            if let Some(c) = self.escape {
                options.escape = c.to_string().into();
            }
            CopyEncoder::new_csv(Arc::clone(fields), options)
        } else {
            let mut options = CopyTextOptions::default();
            if let Some(c) = self.delimiter {
                options.delimiter = c.to_string().into();
            }
            if let Some(text) = &self.null {
                options.null_string = text.as_str().into();
            }
            CopyEncoder::new_text(Arc::clone(fields), options)
        }
    }

    /// The CSV header line: the column names, quoted where CSV needs it.
    fn header_line(&self, fields: &[FieldInfo]) -> CopyData {
        let delimiter = self.delimiter.unwrap_or(',');
        let quote = self.quote.unwrap_or('"');
        let names: Vec<String> = fields
            .iter()
            .map(|f| {
                let name = f.name();
                if name.contains([delimiter, quote, '\n', '\r']) {
                    let doubled = name.replace(quote, &format!("{quote}{quote}"));
                    format!("{quote}{doubled}{quote}")
                } else {
                    name.to_string()
                }
            })
            .collect();
        let line = format!("{}\n", names.join(&delimiter.to_string()));
        CopyData::new(line.into_bytes().into())
    }
}

/// Each row of `batch` as one copy-data message.
fn encode(
    batch: &RecordBatch,
    fields: &[FieldInfo],
    encoder: &mut CopyEncoder,
) -> Vec<PgWireResult<CopyData>> {
    let schema = batch.schema();
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        for ((column, arrow_field), pg_field) in
            batch.columns().iter().zip(schema.fields()).zip(fields)
        {
            if let Err(e) = encode_value(encoder, column, row, arrow_field, pg_field) {
                rows.push(Err(e));
                return rows;
            }
        }
        rows.push(Ok(encoder.take_copy()));
    }
    rows
}

fn unsupported(option: &str) -> Error {
    Error::InvalidArgument(format!(
        "COPY option {option} is not supported; Tarn's COPY … TO STDOUT takes FORMAT text \
         or csv, DELIMITER, NULL, HEADER, QUOTE and ESCAPE"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_statements_psql_and_drivers_send() {
        let copy = parse("COPY (SELECT a FROM db.t) TO STDOUT WITH (FORMAT csv, HEADER)")
            .unwrap()
            .unwrap();
        assert_eq!(copy.query, "SELECT a FROM db.t");
        assert!(copy.csv && copy.header);
        // psql's \copy … to 'file' with csv header (the pre-9.0 spelling).
        let copy = parse("COPY  ( select 1 ) TO STDOUT with csv header")
            .unwrap()
            .unwrap();
        assert!(copy.csv && copy.header);
        let copy = parse("copy db.t (a, b) to stdout").unwrap().unwrap();
        assert_eq!(copy.query, "SELECT a, b FROM db.t");
        assert!(!copy.csv);
        assert!(parse("SELECT 1").unwrap().is_none());
    }

    #[test]
    fn copies_tarn_does_not_serve_say_what_it_serves() {
        for sql in [
            "COPY db.t FROM STDIN",
            "COPY db.t TO '/tmp/x'",
            "COPY db.t TO STDOUT (FORMAT binary)",
            "COPY db.t TO STDOUT (HEADER)",
        ] {
            let error = parse(sql).unwrap_err().to_string();
            assert!(
                error.contains("TO STDOUT") || error.contains("CSV mode"),
                "{sql}: {error}"
            );
        }
    }
}
