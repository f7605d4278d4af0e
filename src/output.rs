//! What commands print: results as a table, CSV or JSON, and the line that says where a
//! server listens.

use std::io::Write;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::config::OutputFormat;
use tarn_lake::error::{Error, Result};

/// Writes `batches` in `format`.
///
/// # Errors
/// When writing fails.
pub fn write_batches(
    out: &mut dyn Write,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    format: OutputFormat,
) -> Result<()> {
    let io = |e: std::io::Error| Error::io("<stdout>", e);
    match format {
        OutputFormat::Table => {
            let table = if batches.is_empty() {
                arrow::util::pretty::pretty_format_batches(&[RecordBatch::new_empty(Arc::clone(
                    schema,
                ))])?
            } else {
                arrow::util::pretty::pretty_format_batches(batches)?
            };
            writeln!(out, "{table}").map_err(io)?;
        }
        OutputFormat::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            if batches.is_empty() {
                writer.write(&RecordBatch::new_empty(Arc::clone(schema)))?;
            }
            for batch in batches {
                writer.write(batch)?;
            }
        }
        OutputFormat::Json => {
            let mut writer = arrow::json::LineDelimitedWriter::new(out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
    }
    Ok(())
}

/// Prints the line clients and test harnesses wait for.
pub fn announce(addr: std::net::SocketAddr) {
    announce_scheme("grpc", addr);
}

pub fn announce_scheme(scheme: &str, addr: std::net::SocketAddr) {
    println!("Tarn Flight SQL listening on {scheme}://{addr}");
    let _ = std::io::stdout().flush();
}

/// Every row of `batches` as text (nulls as `NULL`).
pub fn text_rows(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let options = arrow::util::display::FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .filter_map(|c| arrow::util::display::ArrayFormatter::try_new(c, &options).ok())
            .collect();
        for i in 0..batch.num_rows() {
            rows.push(formatters.iter().map(|f| f.value(i).to_string()).collect());
        }
    }
    rows
}

/// The first value of a result, as text.
pub fn first_text(batches: &[RecordBatch]) -> Option<String> {
    text_rows(batches).into_iter().next()?.into_iter().next()
}
