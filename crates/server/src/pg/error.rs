//! Tarn's errors as Postgres errors: the SQLSTATE code of their kind, and Tarn's message
//! (which names the table, column or file and the fix).

use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError};

use tarn_lake::error::Error;

/// The SQLSTATE of an error's kind.
pub(crate) fn sqlstate(e: &Error) -> &'static str {
    match e {
        Error::Sql(_) => "42601",
        Error::TableNotFound { .. } => "42P01",
        // undefined_object
        Error::NotFound(_) => "42704",
        Error::AlreadyExists(_) => "42P07",
        Error::PermissionDenied(_) => "42501",
        Error::Unauthenticated(_) => "28000",
        Error::InvalidArgument(_) | Error::InvalidLocation { .. } => "22023",
        Error::Conflict(_) => "40001",
        // insufficient_resources: a full memory pool or a full admission queue.
        Error::ResourceExhausted(_) => "53000",
        // query_canceled: a time limit or a CancelRequest.
        Error::Timeout(_) => "57014",
        Error::ObjectStore { .. } | Error::Io { .. } => "58030",
        // connection_failure
        Error::Unavailable(_) => "08006",
        Error::Execution(_)
        | Error::Catalog(_)
        | Error::Migrate(_)
        | Error::CatalogCorrupt { .. }
        | Error::Internal(_) => "XX000",
    }
}

/// `e` as the error a Postgres client receives.
pub(crate) fn pg_error(e: &Error) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        sqlstate(e).to_string(),
        e.to_string(),
    )))
}

/// The error of a statement stopped by a `CancelRequest`.
pub(crate) fn cancelled() -> Error {
    Error::Timeout("canceling statement due to user request".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_their_postgres_codes() {
        assert_eq!(
            sqlstate(&Error::TableNotFound {
                name: "db.t".into()
            }),
            "42P01"
        );
        assert_eq!(sqlstate(&Error::PermissionDenied("x".into())), "42501");
        assert_eq!(sqlstate(&cancelled()), "57014");
    }
}
