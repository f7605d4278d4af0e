//! Tarn's error type (mapped to gRPC statuses by `tarn_server::status`, to HTTP statuses by the
//! HTTP query API).
//!
//! Variants separate a user's mistake (bad SQL, an unknown table, a bad path) from a fault
//! in the lake (a corrupt file) and from Tarn's own bugs (`Internal`), so that the wire
//! mapping and the log level follow from the variant, never from a string.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong inside Tarn.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SQL text could not be parsed or planned; the message carries DataFusion's
    /// explanation (with the position when the parser gives one).
    #[error("SQL error: {0}")]
    Sql(String),

    /// A query named a table that the catalog does not know.
    #[error("table '{name}' not found; run `tarn crawl` on its location or check `SHOW TABLES`")]
    TableNotFound { name: String },

    /// Something a request named by id that does not exist (or that the caller may not
    /// see): the message names it and how to find one.
    #[error("not found: {0}")]
    NotFound(String),

    /// A location that cannot be turned into an object store URL.
    #[error("invalid location '{location}': {reason}")]
    InvalidLocation { location: String, reason: String },

    /// Something the request would create already exists (ingest in `create` mode).
    #[error("{0}")]
    AlreadyExists(String),

    /// Another writer changed what this one read before it committed; nothing was
    /// changed, and trying again reads the new state.
    #[error("conflict: {0}; try again")]
    Conflict(String),

    /// The caller is known but its role does not allow the request.
    #[error("permission denied: {0}")]
    PermissionDenied(String),

    /// The caller did not prove who it is (no, bad or expired credentials).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),

    /// An argument or request that is malformed (bad parameter, bad ticket, bad flag).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A server Tarn needed did not answer (a remote Tarn server the CLI talks to); trying
    /// again later may succeed.
    #[error("unavailable: {0}")]
    Unavailable(String),

    /// Reading or listing the object store failed.
    #[error("object store error at '{location}': {source}")]
    ObjectStore {
        location: String,
        #[source]
        source: object_store::Error,
    },

    /// The catalog database failed (it could not be opened, migrated, read or written).
    #[error("catalog database error: {0}")]
    Catalog(#[from] sqlx::Error),

    /// The catalog database's migrations failed.
    #[error("catalog migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// A catalog row that Tarn itself wrote could not be decoded: a bug or a hand edit.
    #[error("catalog entry for {what} is damaged: {reason}")]
    CatalogCorrupt { what: String, reason: String },

    /// A query needed more than the server lets one query have (memory, a place among
    /// running queries): it was stopped or refused alone, and may succeed later.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),

    /// A query ran past the server's time limit and was cancelled.
    #[error("timeout: {0}")]
    Timeout(String),

    /// Query execution failed after planning.
    #[error("query failed: {0}")]
    Execution(String),

    /// Local file I/O (the data directory, demo files).
    #[error("I/O error at '{path}': {source}", path = path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A bug in Tarn: an invariant did not hold.
    #[error("internal error (please report): {0}")]
    Internal(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Wraps an object store error with the location it concerns.
    pub fn store(location: impl Into<String>, source: object_store::Error) -> Self {
        Error::ObjectStore {
            location: location.into(),
            source,
        }
    }
}

impl From<tarn_catalog::Error> for Error {
    fn from(e: tarn_catalog::Error) -> Self {
        use tarn_catalog::Error as C;
        match e {
            C::AlreadyExists(m) => Error::AlreadyExists(m),
            C::Conflict(m) | C::SchemaMoved(m) => Error::Conflict(m),
            C::InvalidArgument(m) => Error::InvalidArgument(m),
            C::Catalog(e) => Error::Catalog(e),
            C::Migrate(e) => Error::Migrate(e),
            C::CatalogCorrupt { what, reason } => Error::CatalogCorrupt { what, reason },
            C::Io { path, source } => Error::Io { path, source },
            C::Internal(m) => Error::Internal(m),
        }
    }
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        from_datafusion(e)
    }
}

/// Tarn's error for a DataFusion error, by its variant.
fn from_datafusion(e: datafusion::error::DataFusionError) -> Error {
    use datafusion::error::DataFusionError as D;
    match e {
        // The parser's own message carries the line and column.
        D::SQL(parser, _) => Error::Sql(
            parser
                .to_string()
                .trim_start_matches("sql parser error: ")
                .to_string(),
        ),
        D::Plan(message) => Error::Sql(message),
        D::ResourcesExhausted(message) => Error::ResourceExhausted(message),
        D::SchemaError(..) | D::NotImplemented(_) => Error::Sql(e.strip_backtrace().to_string()),
        D::Context(ctx, inner) => match Error::from(*inner) {
            Error::Sql(m) => Error::Sql(format!("{ctx}: {m}")),
            Error::Execution(m) => Error::Execution(format!("{ctx}: {m}")),
            other => other,
        },
        D::Diagnostic(_, inner) => Error::from(*inner),
        D::Shared(inner) => match std::sync::Arc::try_unwrap(inner) {
            Ok(inner) => Error::from(inner),
            Err(shared) => from_shared(&shared),
        },
        D::ArrowError(arrow, _) => Error::from(*arrow),
        D::External(ext) => match ext.downcast::<Error>() {
            Ok(tarn) => *tarn,
            Err(other) => match other.downcast::<arrow::error::ArrowError>() {
                Ok(arrow) => Error::from(*arrow),
                Err(other) => Error::Execution(other.to_string()),
            },
        },
        other => Error::Execution(other.strip_backtrace().to_string()),
    }
}

/// Tarn's error for a DataFusion error that several partitions share (a repartition
/// reports one error to every output), read through the reference because it cannot
/// be moved out: the same kinds as `from_datafusion`, so the fix a reader needs does
/// not depend on which partition saw the error first.
fn from_shared(e: &datafusion::error::DataFusionError) -> Error {
    use datafusion::error::DataFusionError as D;
    match e {
        D::ArrowError(arrow, _) => from_arrow(arrow),
        D::Shared(inner) => from_shared(inner),
        D::Context(ctx, inner) => match from_shared(inner) {
            Error::Execution(m) => Error::Execution(format!("{ctx}: {m}")),
            other => other,
        },
        D::External(ext) => match ext.downcast_ref::<arrow::error::ArrowError>() {
            Some(arrow) => from_arrow(arrow),
            None => Error::Execution(ext.to_string()),
        },
        D::ResourcesExhausted(message) => Error::ResourceExhausted(message.clone()),
        other => Error::Execution(other.strip_backtrace().to_string()),
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        from_arrow(&e)
    }
}

/// A value that does not parse as its column's type (the CSV and JSON readers'
/// errors, and text cast to a date or time) gets the fix: a CSV or JSON table's
/// column types were inferred from a sample.
fn from_arrow(e: &arrow::error::ArrowError) -> Error {
    use arrow::error::ArrowError as A;
    match e {
        A::ParseError(_) | A::CsvError(_) | A::JsonError(_) => Error::Execution(format!(
            "{e}; if the value is read from a CSV or JSON table, its column types were \
             inferred from the first records of each file: crawl it again with a larger \
             --sample-rows, or declare the columns with CREATE EXTERNAL TABLE … \
             (column TYPE, …) STORED AS CSV"
        )),
        other => Error::Execution(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::error::DataFusionError;
    use std::sync::Arc;

    #[test]
    fn a_parse_error_several_partitions_share_keeps_its_fix() {
        let parse = arrow::error::ArrowError::ParseError("'0.5' as type 'Int64'".into());
        let shared = Arc::new(DataFusionError::ArrowError(Box::new(parse), None));
        let _other_partition = Arc::clone(&shared);
        let e = Error::from(DataFusionError::Shared(shared));
        let message = e.to_string();
        assert!(message.contains("'0.5' as type 'Int64'"), "{message}");
        assert!(message.contains("--sample-rows"), "{message}");
    }

    #[test]
    fn a_resource_error_several_partitions_share_stays_one() {
        let full = Arc::new(DataFusionError::ResourcesExhausted("pool full".into()));
        let _other_partition = Arc::clone(&full);
        let e = Error::from(DataFusionError::Shared(full));
        assert!(matches!(e, Error::ResourceExhausted(m) if m == "pool full"));
    }
}
