//! The catalog's errors. The application maps each to its own (and to a wire status) by
//! variant, never by message.

use std::path::PathBuf;

/// Result alias of the catalog.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the catalog.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Something a request would create already exists.
    #[error("{0}")]
    AlreadyExists(String),

    /// Another writer changed what this one read before it committed; nothing was
    /// changed, and trying again reads the new state.
    #[error("conflict: {0}; try again")]
    Conflict(String),

    /// Another writer changed the table's schema after this commit's schema was merged
    /// onto the one before ([`crate::TableCommit::base_schema_version`]); nothing was
    /// changed. The writer merges its columns onto the new schema and commits again.
    #[error("conflict: {0}; try again")]
    SchemaMoved(String),

    /// A request the catalog cannot carry out as asked (an unknown name, a bad value).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The catalog database failed (it could not be opened, read or written).
    #[error("catalog database error: {0}")]
    Catalog(#[from] sqlx::Error),

    /// The catalog database's migrations failed.
    #[error("catalog migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// A catalog row that Tarn itself wrote could not be decoded: a bug or a hand edit.
    #[error("catalog entry for {what} is damaged: {reason}")]
    CatalogCorrupt { what: String, reason: String },

    /// Local file I/O (the data directory).
    #[error("I/O error at '{path}': {source}", path = path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A bug: an invariant did not hold.
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
}
