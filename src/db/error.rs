//! Database failures, classified once from the drivers' error kinds, and
//! their one mapping into [`AppError`].
//!
//! Diesel reports a kind (`DatabaseErrorKind`) where the driver gives a
//! code it knows (unique and foreign-key violations, serialization
//! failures, closed connections). Where it does not (SQLite's
//! `SQLITE_BUSY`, PostgreSQL's `22021` for NUL in text, an administrator
//! terminating the connection), the message is the only signal and is read
//! here, in this one place.

use std::borrow::Cow;

use diesel::result::{DatabaseErrorKind, Error};

use crate::error::AppError;

/// What went wrong, as far as a caller needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbError {
    /// The database cannot be reached (server down, connection closed).
    Unavailable(String),
    /// SQLite is locked by another writer for longer than the busy timeout.
    Busy,
    /// A unique constraint refused the write; the constraint name where the
    /// driver gives one.
    Duplicate(Option<String>),
    /// A foreign key refused the write (the parent row is gone).
    MissingParent,
    /// A concurrent serializable transaction conflicted with this one.
    Conflict,
    /// `first()` found no row.
    NotFound,
    /// Text the database refuses (NUL characters on PostgreSQL).
    InvalidText,
    /// Anything else; the text is for the log only.
    Other(String),
}

impl DbError {
    pub fn classify(error: &Error) -> Self {
        match error {
            Error::NotFound => DbError::NotFound,
            Error::BrokenTransactionManager => {
                DbError::Unavailable("broken transaction manager".into())
            }
            Error::DatabaseError(kind, info) => {
                let message = info.message();
                match kind {
                    DatabaseErrorKind::UniqueViolation => {
                        DbError::Duplicate(info.constraint_name().map(str::to_string))
                    }
                    DatabaseErrorKind::ForeignKeyViolation => DbError::MissingParent,
                    DatabaseErrorKind::SerializationFailure => DbError::Conflict,
                    DatabaseErrorKind::ClosedConnection
                    | DatabaseErrorKind::UnableToSendCommand => {
                        DbError::Unavailable(message.to_string())
                    }
                    _ if message.contains("database is locked")
                        || message.contains("database table is locked") =>
                    {
                        DbError::Busy
                    }
                    _ if message.contains("0x00") => DbError::InvalidText,
                    _ if message.contains("server closed the connection")
                        || message.contains("terminating connection")
                        || message.contains("no connection to the server") =>
                    {
                        DbError::Unavailable(message.to_string())
                    }
                    _ => DbError::Other(message.to_string()),
                }
            }
            other => DbError::Other(other.to_string()),
        }
    }
}

const DATABASE_UNAVAILABLE: &str = "The database is unavailable; try again shortly";
const DATABASE_BUSY: &str = "The database is busy with another change; try again shortly";

impl From<DbError> for AppError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::Unavailable(cause) => {
                tracing::warn!(%cause, "database unavailable");
                AppError::database_outage(DATABASE_UNAVAILABLE)
            }
            // After the busy timeout's retries: another change holds the
            // database, which is a conflict to retry, not an outage.
            DbError::Busy => AppError::conflict(DATABASE_BUSY).retry_after(1),
            DbError::Conflict => {
                AppError::conflict("A concurrent change conflicted with this one; try again")
                    .retry_after(1)
            }
            DbError::Duplicate(_) => AppError::conflict("This already exists"),
            DbError::MissingParent => AppError::conflict("What this refers to no longer exists"),
            DbError::NotFound => AppError::not_found("Not Found"),
            // PostgreSQL refuses NUL in text; SQLite would store it. Either
            // way it is bad input, not a server fault.
            DbError::InvalidText => {
                AppError::unprocessable("Text must not contain NUL (\\u0000) characters")
            }
            DbError::Other(cause) => AppError::internal(format_args!("database error: {cause}")),
        }
    }
}

impl From<Error> for AppError {
    fn from(error: Error) -> Self {
        DbError::classify(&error).into()
    }
}

impl From<diesel::r2d2::PoolError> for AppError {
    fn from(error: diesel::r2d2::PoolError) -> Self {
        DbError::Unavailable(format!("no database connection available: {error}")).into()
    }
}

/// For a store's write: a unique violation becomes a 409 with `detail`,
/// any other error maps as usual. The one place a duplicate gets its
/// domain's wording.
pub fn conflict_on_duplicate(
    detail: impl Into<Cow<'static, str>>,
) -> impl FnOnce(Error) -> AppError {
    move |error| match DbError::classify(&error) {
        DbError::Duplicate(_) => AppError::conflict(detail),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_is_a_409_and_an_outage_a_503_both_with_retry_after() {
        let busy = AppError::from(DbError::Busy);
        assert_eq!(busy.status().as_u16(), 409);
        assert!(!busy.is_database_outage());
        let down = AppError::from(DbError::Unavailable("gone".into()));
        assert_eq!(down.status().as_u16(), 503);
        assert!(down.is_database_outage());
        assert_eq!(AppError::from(DbError::Conflict).status().as_u16(), 409);
        assert_eq!(AppError::from(DbError::InvalidText).status().as_u16(), 422);
    }
}
