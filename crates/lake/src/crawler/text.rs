//! CSV and newline-delimited JSON files, the raw form a Firehose-style writer lands before
//! any conversion: their format, compression, header and columns, learned from a sample of
//! each file's first bytes.
//!
//! The format comes from the name (`.csv`, `.tsv`, `.json`, `.jsonl`, `.ndjson`, each
//! optionally `.gz` or `.zst`), or, for a file without a known extension (Firehose writes
//! none by default), from its first bytes. Columns are inferred by Arrow's CSV and JSON
//! readers (the ones DataFusion scans with) from the first `sample_rows` records of the
//! decompressed sample.

use std::io::Read;

use arrow::datatypes::{DataType, Schema};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

/// A file format the crawler catalogues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    Parquet,
    Csv,
    Json,
}

impl FileFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            FileFormat::Parquet => "parquet",
            FileFormat::Csv => "csv",
            FileFormat::Json => "json",
        }
    }

    /// The files' format of a table stored as `format`; `None` for a table format with
    /// its own log (Delta).
    pub fn of_table(format: crate::catalog::TableFormat) -> Option<Self> {
        use crate::catalog::TableFormat;
        match format {
            TableFormat::Parquet => Some(FileFormat::Parquet),
            TableFormat::Csv => Some(FileFormat::Csv),
            TableFormat::Json => Some(FileFormat::Json),
            TableFormat::Delta => None,
        }
    }

    /// The format of a table of these files.
    pub fn table_format(self) -> crate::catalog::TableFormat {
        use crate::catalog::TableFormat;
        match self {
            FileFormat::Parquet => TableFormat::Parquet,
            FileFormat::Csv => TableFormat::Csv,
            FileFormat::Json => TableFormat::Json,
        }
    }
}

impl std::fmt::Display for FileFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileFormat::Parquet => "Parquet",
            FileFormat::Csv => "CSV",
            FileFormat::Json => "JSON",
        })
    }
}

/// How a text file is compressed, from its name's last extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn of(path: &str) -> Self {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".gz") || lower.ends_with(".gzip") {
            Compression::Gzip
        } else if lower.ends_with(".zst") || lower.ends_with(".zstd") {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// The file's name, lower-cased, without a `.gz`/`.zst` ending.
fn file_name_without_codec(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    match [".gz", ".gzip", ".zst", ".zstd"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
    {
        Some(stem) => stem.to_string(),
        None => name,
    }
}

/// The format a file's name says, if it says one.
pub fn format_from_name(path: &str) -> Option<FileFormat> {
    let name = file_name_without_codec(path);
    let (_, ext) = name.rsplit_once('.')?;
    match ext {
        "parquet" | "parq" | "pq" => Some(FileFormat::Parquet),
        "csv" | "tsv" => Some(FileFormat::Csv),
        "json" | "jsonl" | "ndjson" => Some(FileFormat::Json),
        _ => None,
    }
}

/// Whether the file's name (past a `.gz`/`.zst`) ends in an extension: a dot and one to
/// five letters or digits, at least one a letter (`-2024.01` style stamps are not one).
pub fn has_extension(path: &str) -> bool {
    let name = file_name_without_codec(path);
    name.rsplit_once('.').is_some_and(|(stem, ext)| {
        !stem.is_empty()
            && (1..=5).contains(&ext.len())
            && ext.bytes().all(|b| b.is_ascii_alphanumeric())
            && ext.bytes().any(|b| b.is_ascii_alphabetic())
    })
}

/// The most a compressed sample decodes to (16 MiB: many thousands of records).
const MAX_DECODED: u64 = 16 << 20;

/// What a sample of a CSV or JSON file says about the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TextSample {
    pub format: FileFormat,
    pub schema: Schema,
    /// CSV: whether the first line names the columns.
    pub has_header: bool,
    /// CSV: the field delimiter.
    pub delimiter: u8,
}

/// Why a sample could not be used.
#[derive(Debug)]
pub enum SampleError {
    /// Not text Tarn reads (binary, or compressed without a `.gz`/`.zst` name).
    NotText(String),
    /// Text that does not parse as its format.
    Malformed(String),
    Store(object_store::Error),
}

impl std::fmt::Display for SampleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SampleError::NotText(m) | SampleError::Malformed(m) => f.write_str(m),
            SampleError::Store(e) => write!(f, "could not read: {e}"),
        }
    }
}

/// Reads the first `sample_bytes` of the file at `path` and infers its format (when
/// `format` is not given), header, delimiter and columns from up to `sample_rows` records.
/// `header` fixes the CSV header decision (a table keeps the one made at its first crawl).
pub async fn sample(
    store: &dyn ObjectStore,
    path: &Path,
    size: u64,
    format: Option<FileFormat>,
    header: Option<bool>,
    sample_bytes: u64,
    sample_rows: usize,
) -> Result<TextSample, SampleError> {
    let take = size.min(sample_bytes.max(1024));
    let raw = store
        .get_range(path, 0..take)
        .await
        .map_err(SampleError::Store)?;
    let compression = Compression::of(path.as_ref());
    let (text, complete) = decompress(&raw, compression, take == size)?;
    if compression == Compression::None
        && (text.starts_with(&[0x1f, 0x8b]) || text.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]))
    {
        return Err(SampleError::NotText(
            "compressed, but its name does not end in .gz or .zst; Tarn picks the codec from \
             the name, so rename it or write it with the extension"
                .into(),
        ));
    }
    // Whole records only: a sample cut mid-line drops its last line.
    let text = if complete {
        &text[..]
    } else {
        match text.iter().rposition(|b| *b == b'\n') {
            Some(end) => &text[..=end],
            None => {
                return Err(SampleError::Malformed(format!(
                    "no complete line in the first {take} bytes; raise the sample size"
                )));
            }
        }
    };
    let format = match format {
        Some(f) => f,
        None => sniff(text).ok_or_else(|| {
            SampleError::NotText("not Parquet, CSV or JSON (binary content)".into())
        })?,
    };
    match format {
        FileFormat::Json => {
            let (schema, _) = arrow::json::reader::infer_json_schema(
                std::io::BufReader::new(text),
                Some(sample_rows),
            )
            .map_err(|e| SampleError::Malformed(format!("not newline-delimited JSON: {e}")))?;
            if schema.fields().is_empty() {
                return Err(SampleError::Malformed(
                    "no JSON objects in the sample".into(),
                ));
            }
            Ok(TextSample {
                format,
                schema,
                has_header: false,
                delimiter: b',',
            })
        }
        FileFormat::Csv => {
            let delimiter = if path.as_ref().to_ascii_lowercase().contains(".tsv") {
                b'\t'
            } else {
                guess_delimiter(text)
            };
            let infer = |with_header: bool| {
                arrow::csv::reader::Format::default()
                    .with_header(with_header)
                    .with_delimiter(delimiter)
                    .infer_schema(std::io::Cursor::new(text), Some(sample_rows))
                    .map(|(s, _)| s)
                    .map_err(|e| SampleError::Malformed(format!("not CSV: {e}")))
            };
            let has_header = match header {
                Some(h) => h,
                None => detect_header(text, delimiter, &infer(true)?, &infer(false)?),
            };
            Ok(TextSample {
                format,
                schema: infer(has_header)?,
                has_header,
                delimiter,
            })
        }
        FileFormat::Parquet => Err(SampleError::NotText("a Parquet file".into())),
    }
}

/// The decompressed sample, and whether it is the whole file.
fn decompress(
    raw: &[u8],
    compression: Compression,
    whole_file: bool,
) -> Result<(Vec<u8>, bool), SampleError> {
    let mut out = Vec::new();
    let result = match compression {
        Compression::None => return Ok((raw.to_vec(), whole_file)),
        Compression::Gzip => flate2::read::MultiGzDecoder::new(raw)
            .take(MAX_DECODED)
            .read_to_end(&mut out),
        Compression::Zstd => zstd::stream::read::Decoder::new(raw)
            .and_then(|d| d.take(MAX_DECODED).read_to_end(&mut out)),
    };
    // A small compressed prefix can expand enormously; a sample never decodes past the
    // cap, and a file cut there is not whole.
    let whole_file = whole_file && (out.len() as u64) < MAX_DECODED;
    match result {
        Ok(_) => Ok((out, whole_file)),
        // A prefix of a compressed file ends mid-stream: keep what it decoded to.
        Err(_) if !whole_file && !out.is_empty() => Ok((out, false)),
        Err(e) => Err(SampleError::Malformed(format!(
            "cannot be decompressed as its name says: {e}"
        ))),
    }
}

/// JSON when the first non-blank byte opens an object; CSV when the sample is text.
fn sniff(text: &[u8]) -> Option<FileFormat> {
    let first = text.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first == b'{' {
        return Some(FileFormat::Json);
    }
    let probe = &text[..text.len().min(4096)];
    let binary = probe
        .iter()
        .filter(|b| **b < 0x09 || (**b > 0x0d && **b < 0x20))
        .count();
    (binary == 0).then_some(FileFormat::Csv)
}

/// The candidate that splits the first lines into the same number (> 0) of fields, the
/// most fields winning; `,` when none does.
fn guess_delimiter(text: &[u8]) -> u8 {
    let lines: Vec<&[u8]> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .take(20)
        .collect();
    let mut best = (0usize, b',');
    for candidate in [b',', b'\t', b';', b'|'] {
        let counts: Vec<usize> = lines
            .iter()
            .map(|l| l.iter().filter(|b| **b == candidate).count())
            .collect();
        let Some(first) = counts.first().copied() else {
            continue;
        };
        if first > best.0 && counts.iter().all(|c| *c == first) {
            best = (first, candidate);
        }
    }
    best.1
}

/// Whether the first line names the columns: it does when a column whose other values have
/// a type (numbers, dates, booleans) has a first value that is not of that type; when every
/// column is text, when the first line's values are distinct names.
fn detect_header(text: &[u8], delimiter: u8, with_header: &Schema, without: &Schema) -> bool {
    let typed_below = with_header
        .fields()
        .iter()
        .zip(without.fields())
        .any(|(h, n)| h.data_type() != &DataType::Utf8 && n.data_type() == &DataType::Utf8);
    if typed_below {
        return true;
    }
    if with_header
        .fields()
        .iter()
        .any(|f| f.data_type() != &DataType::Utf8)
    {
        // The first line has the types of the rest: it is data.
        return false;
    }
    let first_line = text.split(|b| *b == b'\n').next().unwrap_or_default();
    let names: Vec<String> = String::from_utf8_lossy(first_line)
        .trim_end_matches('\r')
        .split(delimiter as char)
        .map(|v| v.trim().trim_matches('"').to_string())
        .collect();
    let mut distinct = names.clone();
    distinct.sort();
    distinct.dedup();
    distinct.len() == names.len()
        && names.iter().all(|n| {
            !n.is_empty()
                && n.len() <= 64
                && n.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ' ' | '.' | '-'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv_sample(text: &str) -> (bool, u8, Vec<String>) {
        let delimiter = guess_delimiter(text.as_bytes());
        let infer = |h: bool| {
            arrow::csv::reader::Format::default()
                .with_header(h)
                .with_delimiter(delimiter)
                .infer_schema(std::io::Cursor::new(text.as_bytes()), None)
                .unwrap()
                .0
        };
        let header = detect_header(text.as_bytes(), delimiter, &infer(true), &infer(false));
        let schema = infer(header);
        let columns = schema
            .fields()
            .iter()
            .map(|f| format!("{} {}", f.name(), f.data_type()))
            .collect();
        (header, delimiter, columns)
    }

    #[test]
    fn headers_and_delimiters_are_detected() {
        let (header, delimiter, columns) = csv_sample("id,name,score\n1,ann,2.5\n2,bob,3\n");
        assert!(header);
        assert_eq!(delimiter, b',');
        assert_eq!(columns, ["id Int64", "name Utf8", "score Float64"]);

        let (header, delimiter, columns) = csv_sample("1;ann;2.5\n2;bob;3\n");
        assert!(!header, "typed first line is data");
        assert_eq!(delimiter, b';');
        assert_eq!(columns[0], "column_1 Int64");

        // All text: a header when the first line's values are distinct names.
        assert!(csv_sample("city\tcountry\nParis\tFR\nLyon\tFR\n").0);
        assert!(!csv_sample("a b c!,x\nd,e\n").0);
    }

    #[test]
    fn formats_come_from_names_then_contents() {
        assert_eq!(format_from_name("a/b/x.csv.gz"), Some(FileFormat::Csv));
        assert_eq!(format_from_name("x.JSONL"), Some(FileFormat::Json));
        assert_eq!(format_from_name("x.ndjson.zst"), Some(FileFormat::Json));
        assert_eq!(format_from_name("x.parquet"), Some(FileFormat::Parquet));
        assert_eq!(format_from_name("events-1-2024-01-05-13-00"), None);
        assert!(!has_extension("a/events-1-2024-01-05-13-00-00-ab12.gz"));
        assert!(has_extension("notes/README.txt"));
        assert!(!has_extension("v1.2024"));
        assert_eq!(Compression::of("x.json.gz"), Compression::Gzip);
        assert_eq!(Compression::of("x.csv.zst"), Compression::Zstd);
        assert_eq!(sniff(b"  {\"a\": 1}\n"), Some(FileFormat::Json));
        assert_eq!(sniff(b"a,b\n1,2\n"), Some(FileFormat::Csv));
        assert_eq!(sniff(&[0u8, 1, 2, 3]), None);
    }
}
