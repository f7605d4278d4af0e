//! Tarn's errors as gRPC statuses, in one place: each error kind has one status code
//! (a bad request `INVALID_ARGUMENT`, an unknown table `NOT_FOUND`, a full queue
//! `RESOURCE_EXHAUSTED`, an unreachable catalog `UNAVAILABLE`, …) and is logged at the
//! level its cause deserves (a caller's mistake at debug, Tarn's own fault at error).

use tarn_lake::Error;
use tonic::Status;

/// The status a client is sent for `e`, logged as its kind deserves.
pub fn status(e: Error) -> Status {
    {
        let message = e.to_string();
        match e {
            Error::Sql(_) | Error::InvalidArgument(_) | Error::InvalidLocation { .. } => {
                tracing::debug!(%message, "request rejected");
                Status::invalid_argument(message)
            }
            Error::AlreadyExists(_) => {
                tracing::debug!(%message, "request rejected");
                Status::already_exists(message)
            }
            Error::PermissionDenied(_) => {
                tracing::info!(%message, "request refused");
                Status::permission_denied(message)
            }
            Error::Unauthenticated(_) => {
                tracing::info!(%message, "request refused");
                Status::unauthenticated(message)
            }
            Error::TableNotFound { .. } | Error::NotFound(_) => {
                tracing::debug!(%message, "request rejected");
                Status::not_found(message)
            }
            Error::Conflict(_) => {
                tracing::info!(%message, "request conflicted");
                Status::aborted(message)
            }
            Error::ObjectStore { .. } | Error::Io { .. } | Error::Execution(_) => {
                tracing::warn!(%message, "request failed");
                Status::aborted(message)
            }
            Error::ResourceExhausted(_) => {
                tracing::info!(%message, "request refused");
                Status::resource_exhausted(message)
            }
            Error::Timeout(_) => {
                tracing::info!(%message, "query timed out");
                Status::deadline_exceeded(message)
            }
            Error::Unavailable(_) => {
                tracing::warn!(%message, "a server Tarn needs is unavailable");
                Status::unavailable(message)
            }
            Error::Catalog(_) | Error::Migrate(_) => {
                tracing::error!(%message, "catalog unavailable");
                Status::unavailable(message)
            }
            Error::CatalogCorrupt { .. } | Error::Internal(_) => {
                tracing::error!(%message, "internal error");
                Status::internal(message)
            }
        }
    }
}

/// `Result<T, Error>` turned into a gRPC handler's result.
pub trait OrStatus<T> {
    /// The value, or the error as [`status`] maps it.
    ///
    /// # Errors
    /// The mapped error.
    fn or_status(self) -> Result<T, Status>;
}

impl<T> OrStatus<T> for Result<T, Error> {
    fn or_status(self) -> Result<T, Status> {
        self.map_err(status)
    }
}
