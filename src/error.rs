//! The one error type of the HTTP API.
//!
//! Every handler and extractor returns [`AppError`]; its `ResponseError` impl
//! is the only place a status code and a JSON body `{"detail": "…"}` are
//! produced. Internal causes (database, I/O) are logged here and replaced by
//! a generic detail, so no stack trace or secret reaches a client.

use std::borrow::Cow;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct AppError {
    status: StatusCode,
    detail: Cow<'static, str>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    detail: &'a str,
}

impl AppError {
    pub fn new(status: StatusCode, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            detail: detail.into(),
        }
    }

    pub fn bad_request(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn unauthorized(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, detail)
    }

    pub fn forbidden(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }

    pub fn not_found(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn conflict(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CONFLICT, detail)
    }

    pub fn payload_too_large(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, detail)
    }

    pub fn unprocessable(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }

    pub fn unavailable(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
    }

    /// Logs the cause and answers 500 with a generic detail.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status.as_u16(), self.detail)
    }
}

impl std::error::Error for AppError {}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(ErrorBody {
            detail: &self.detail,
        })
    }
}

const DATABASE_UNAVAILABLE: &str = "The database is unavailable; try again shortly";

impl From<diesel::result::Error> for AppError {
    fn from(error: diesel::result::Error) -> Self {
        if let diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::SerializationFailure,
            _,
        ) = error
        {
            return Self::conflict("A concurrent change conflicted with this one; try again");
        }
        // PostgreSQL refuses NUL in text; SQLite would store it. Either way
        // it is bad input, not a server fault.
        if let diesel::result::Error::DatabaseError(_, info) = &error {
            if info.message().contains("0x00") {
                return Self::unprocessable("Text must not contain NUL (\\u0000) characters");
            }
        }
        if crate::db::is_unavailable(&error) {
            tracing::warn!(%error, "database unavailable");
            return Self::unavailable(DATABASE_UNAVAILABLE);
        }
        Self::internal(format_args!("database error: {error}"))
    }
}

impl From<diesel::r2d2::PoolError> for AppError {
    fn from(error: diesel::r2d2::PoolError) -> Self {
        tracing::warn!(%error, "no database connection available");
        Self::unavailable(DATABASE_UNAVAILABLE)
    }
}

/// Maps actix's own extractor failures (bad JSON, wrong path type, oversized
/// body) onto the same JSON shape.
pub mod extractors {
    use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
    use actix_web::HttpRequest;

    use super::AppError;

    pub fn json(error: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
        match error {
            JsonPayloadError::Overflow { limit }
            | JsonPayloadError::OverflowKnownLength { limit, .. } => {
                AppError::payload_too_large(format!("Request body is larger than {limit} bytes"))
            }
            JsonPayloadError::ContentType => {
                AppError::unprocessable("Expected a JSON body with Content-Type: application/json")
            }
            JsonPayloadError::Deserialize(e) => {
                AppError::unprocessable(format!("Invalid JSON body: {e}"))
            }
            other => AppError::bad_request(format!("Could not read the request body: {other}")),
        }
        .into()
    }

    pub fn path(error: PathError, _req: &HttpRequest) -> actix_web::Error {
        AppError::unprocessable(format!("Invalid path parameter: {error}")).into()
    }

    pub fn query(error: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
        AppError::unprocessable(format!("Invalid query parameter: {error}")).into()
    }
}
