//! Stateless statement handles and tickets.
//!
//! A ticket or prepared-statement handle carries everything needed to run the statement:
//! the SQL text and any bound parameters (as an Arrow IPC stream). The server keeps no
//! per-statement state, so a client that never calls DoGet leaks nothing, and DoGet may
//! reach any Tarn node behind a load balancer.
//!
//! Layout: `b"TRN4"`, the SQL length (u32, little-endian), the SQL (UTF-8), the default
//! database's length (u32, 0 for none) and name, the session's settings as JSON (length
//! and text; `{}` for none), the catalog generation the statement was planned at (i64, -1
//! for none), then the parameter batches as an IPC stream (absent when nothing is bound).
//! The server signs the whole (see `TarnFlightSql::seal`).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use bytes::Bytes;

use tarn_lake::engine::settings::Settings;
use tarn_lake::error::{Error, Result};

const MAGIC: &[u8; 4] = b"TRN4";
/// A ticket holding a result computed when the ticket was issued (a DDL statement's
/// outcome), as an IPC stream.
const RESULT_MAGIC: &[u8; 4] = b"TRR1";

/// What a ticket holds.
#[derive(Debug, Clone, PartialEq)]
pub enum TicketContent {
    /// A statement to run.
    Statement(StatementHandle),
    /// A result already computed.
    Result(Vec<RecordBatch>),
}

/// Encodes a computed result as a ticket.
///
/// # Errors
/// When the batches cannot be written as IPC.
pub fn encode_result(batches: &[RecordBatch]) -> Result<Bytes> {
    let mut out = RESULT_MAGIC.to_vec();
    if let Some(first) = batches.first() {
        let mut writer = StreamWriter::try_new(&mut out, &first.schema())?;
        for batch in batches {
            writer.write(batch)?;
        }
        writer.finish()?;
    }
    Ok(Bytes::from(out))
}

/// Decodes a ticket made by [`StatementHandle::encode`] or [`encode_result`].
///
/// # Errors
/// [`Error::InvalidArgument`] for bytes that are not a Tarn ticket.
pub fn decode_ticket(bytes: &[u8]) -> Result<TicketContent> {
    match bytes.strip_prefix(RESULT_MAGIC) {
        Some(rest) => Ok(TicketContent::Result(
            StreamReader::try_new(rest, None)
                .and_then(|r| r.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| Error::InvalidArgument(format!("not a Tarn ticket: {e}")))?,
        )),
        None => StatementHandle::decode(bytes).map(TicketContent::Statement),
    }
}

/// A statement as carried in a ticket or handle.
#[derive(Debug, Clone, PartialEq)]
pub struct StatementHandle {
    /// The SQL text as the client sent it.
    pub sql: String,
    /// Bound parameter rows; each row is one execution.
    pub params: Vec<RecordBatch>,
    /// The database unqualified names resolve in, when the client chose one.
    pub database: Option<String>,
    /// The catalog generation a ticket's statement was planned at: running it needs a
    /// catalog snapshot at least this new (a node whose snapshot is as new skips the check).
    /// `None` for prepared statements, which always run on the newest catalog.
    pub generation: Option<i64>,
    /// The session's settings (time zone, switches, …) the statement runs with.
    pub settings: Settings,
}

impl StatementHandle {
    pub fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            params: Vec::new(),
            database: None,
            generation: None,
            settings: Settings::default(),
        }
    }

    /// Encodes the handle.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the SQL is larger than 4 GiB or the parameters
    /// cannot be written as IPC.
    pub fn encode(&self) -> Result<Bytes> {
        let sql_len = u32::try_from(self.sql.len())
            .map_err(|_| Error::InvalidArgument("SQL text is larger than 4 GiB".into()))?;
        let mut out = Vec::with_capacity(8 + self.sql.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&sql_len.to_le_bytes());
        out.extend_from_slice(self.sql.as_bytes());
        let database = self.database.as_deref().unwrap_or("");
        let db_len = u32::try_from(database.len())
            .map_err(|_| Error::InvalidArgument("database name is too long".into()))?;
        out.extend_from_slice(&db_len.to_le_bytes());
        out.extend_from_slice(database.as_bytes());
        let settings = serde_json::to_vec(&self.settings)
            .map_err(|e| Error::Internal(format!("session settings as JSON: {e}")))?;
        let settings_len = u32::try_from(settings.len())
            .map_err(|_| Error::InvalidArgument("session settings are too long".into()))?;
        out.extend_from_slice(&settings_len.to_le_bytes());
        out.extend_from_slice(&settings);
        out.extend_from_slice(&self.generation.unwrap_or(-1).to_le_bytes());
        if let Some(first) = self.params.first() {
            let mut writer = StreamWriter::try_new(&mut out, &first.schema())?;
            for batch in &self.params {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
        Ok(Bytes::from(out))
    }

    /// Decodes a handle produced by [`StatementHandle::encode`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bytes that are not a Tarn handle.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "not a Tarn statement handle ({why}); get tickets and handles from this server's \
                 GetFlightInfo or CreatePreparedStatement"
            ))
        };
        let rest = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| bad("unknown format"))?;
        // A u32 length, then that many bytes of UTF-8.
        let text = |bytes: &[u8], what: &str| -> Result<(String, usize)> {
            let (len, rest) = bytes
                .split_first_chunk::<4>()
                .ok_or_else(|| bad("truncated"))?;
            let len = u32::from_le_bytes(*len) as usize;
            let value = rest.get(..len).ok_or_else(|| bad("truncated"))?;
            let value =
                std::str::from_utf8(value).map_err(|_| bad(&format!("{what} is not UTF-8")))?;
            Ok((value.to_string(), 4 + len))
        };
        let (sql, used) = text(rest, "SQL")?;
        let rest = &rest[used..];
        let (database, used) = text(rest, "database")?;
        let rest = &rest[used..];
        let database = (!database.is_empty()).then_some(database);
        let (settings, used) = text(rest, "settings")?;
        let rest = &rest[used..];
        let settings: Settings =
            serde_json::from_str(&settings).map_err(|e| bad(&format!("settings: {e}")))?;
        let (generation, rest) = rest
            .split_first_chunk::<8>()
            .ok_or_else(|| bad("truncated"))?;
        let generation = i64::from_le_bytes(*generation);
        let generation = (generation >= 0).then_some(generation);
        let params = if rest.is_empty() {
            Vec::new()
        } else {
            StreamReader::try_new(rest, None)
                .map_err(|e| bad(&format!("parameters: {e}")))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| bad(&format!("parameters: {e}")))?
        };
        Ok(Self {
            sql,
            params,
            database,
            generation,
            settings,
        })
    }

    /// The parameter rows, as one batch per execution row (empty batches dropped).
    pub fn param_rows(&self) -> Vec<RecordBatch> {
        self.params
            .iter()
            .flat_map(|b| (0..b.num_rows()).map(move |i| b.slice(i, 1)))
            .collect()
    }

    /// The schema of the bound parameters, if any.
    pub fn param_schema(&self) -> Option<Arc<arrow::datatypes::Schema>> {
        self.params.first().map(|b| b.schema())
    }
}

/// Rewrites JDBC/ODBC-style `?` placeholders into DataFusion's positional `$1, $2, …`,
/// leaving `?` inside string literals, quoted identifiers and comments alone.
pub fn rewrite_question_marks(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '`' => {
                out.push(c);
                // Copy through the closing quote; a doubled quote is an escaped quote and
                // simply reopens the literal on the next iteration.
                for d in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                out.push(c);
                let mut prev = '\0';
                for d in chars.by_ref() {
                    out.push(d);
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
            }
            '?' => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn handle_round_trips_with_and_without_params() {
        let plain = StatementHandle::new("SELECT 1");
        assert_eq!(
            StatementHandle::decode(&plain.encode().unwrap()).unwrap(),
            plain
        );

        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec!["x", "y"])),
            ],
        )
        .unwrap();
        let bound = StatementHandle {
            sql: "SELECT $1, $2".into(),
            params: vec![batch],
            database: Some("web".into()),
            generation: Some(42),
            settings: serde_json::from_str(r#"{"time_zone": "Europe/Paris"}"#).unwrap(),
        };
        let decoded = StatementHandle::decode(&bound.encode().unwrap()).unwrap();
        assert_eq!(decoded, bound);
        let rows = decoded.param_rows();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].num_rows(), 1);
    }

    #[test]
    fn result_tickets_round_trip() {
        let batch = RecordBatch::try_from_iter([(
            "result",
            Arc::new(StringArray::from(vec!["created"])) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let ticket = encode_result(std::slice::from_ref(&batch)).unwrap();
        assert_eq!(
            decode_ticket(&ticket).unwrap(),
            TicketContent::Result(vec![batch])
        );
        let statement = StatementHandle::new("SELECT 1");
        assert_eq!(
            decode_ticket(&statement.encode().unwrap()).unwrap(),
            TicketContent::Statement(statement)
        );
    }

    #[test]
    fn garbage_is_rejected_with_a_clear_error() {
        for bytes in [&b""[..], b"hello", b"TRN4\x05\x00\x00\x00ab"] {
            let err = StatementHandle::decode(bytes).unwrap_err().to_string();
            assert!(err.contains("not a Tarn statement handle"), "{err}");
        }
    }

    #[test]
    fn question_marks_outside_literals_become_positional() {
        assert_eq!(
            rewrite_question_marks("SELECT * FROM t WHERE a = ? AND b = '?' AND \"c?\" = ? -- ?\n"),
            "SELECT * FROM t WHERE a = $1 AND b = '?' AND \"c?\" = $2 -- ?\n"
        );
        assert_eq!(
            rewrite_question_marks("/* ? */ SELECT ?"),
            "/* ? */ SELECT $1"
        );
        assert_eq!(
            rewrite_question_marks("SELECT 'it''s ?', ?"),
            "SELECT 'it''s ?', $1"
        );
    }
}
