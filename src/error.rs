//! The one error type of the HTTP API.
//!
//! Every handler and extractor returns [`AppError`]; its `ResponseError` impl
//! is the only place a status code and a JSON body `{"detail": "…"}` are
//! produced. Internal causes (database, I/O) are logged here and replaced by
//! a generic detail, so no stack trace or secret reaches a client.
//!
//! This module is a leaf: it imports nothing of keygate. Other modules
//! convert their own failures into it (`db` maps every database error here,
//! once, in its `From` impls).

use std::borrow::Cow;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct AppError {
    status: StatusCode,
    detail: Cow<'static, str>,
    /// Seconds for a `Retry-After` header (busy or unavailable database).
    retry_after: Option<u32>,
    /// The database could not be reached: the connection that saw it is
    /// not trusted again (see `db::run`).
    database_outage: bool,
    /// A machine-readable reason for a refusal, sent as `X-Keygate-Reason`.
    reason: Option<&'static str>,
}

/// The header a refusal's machine-readable reason goes in.
pub const REASON_HEADER: &str = "x-keygate-reason";

/// Every error's body, and a few answers' (`{"detail": "API Key deleted"}`).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Detail)]
pub struct ErrorBody<'a> {
    detail: &'a str,
}

/// One constructor per plain status, `name => STATUS`: each takes the
/// detail and is [`AppError::new`] with that status.
macro_rules! status_constructors {
    ($($name:ident => $status:ident),* $(,)?) => {
        $(
            #[doc = concat!("`", stringify!($status), "` with `detail`.")]
            pub fn $name(detail: impl Into<Cow<'static, str>>) -> Self {
                Self::new(StatusCode::$status, detail)
            }
        )*
    };
}

impl AppError {
    pub fn new(status: StatusCode, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            detail: detail.into(),
            retry_after: None,
            database_outage: false,
            reason: None,
        }
    }

    /// Names the refusal for machines (`X-Keygate-Reason`).
    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    pub fn reason(&self) -> Option<&'static str> {
        self.reason
    }

    /// Asks the client to retry after `seconds` (sent as `Retry-After`).
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 503 for a database that cannot be reached; see [`Self::is_database_outage`].
    pub fn database_outage(detail: impl Into<Cow<'static, str>>) -> Self {
        let mut error = Self::unavailable(detail).retry_after(1);
        error.database_outage = true;
        error
    }

    /// True when the error means the database connection is gone.
    pub fn is_database_outage(&self) -> bool {
        self.database_outage
    }

    status_constructors! {
        bad_request => BAD_REQUEST,
        unauthorized => UNAUTHORIZED,
        forbidden => FORBIDDEN,
        not_found => NOT_FOUND,
        conflict => CONFLICT,
        payload_too_large => PAYLOAD_TOO_LARGE,
        unprocessable => UNPROCESSABLE_ENTITY,
        unavailable => SERVICE_UNAVAILABLE,
    }

    /// The one 422 for a body that is not the JSON a route takes (Langflow's
    /// wording).
    pub fn invalid_json(cause: impl std::fmt::Display) -> Self {
        Self::unprocessable(format!("Invalid JSON body: {cause}"))
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
        let mut response = HttpResponse::build(self.status);
        if let Some(seconds) = self.retry_after {
            response.insert_header((actix_web::http::header::RETRY_AFTER, seconds.to_string()));
        }
        if let Some(reason) = self.reason {
            response.insert_header((REASON_HEADER, reason));
        }
        response.json(ErrorBody {
            detail: &self.detail,
        })
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
            JsonPayloadError::Deserialize(e) => AppError::invalid_json(e),
            other => AppError::bad_request(format!("Could not read the request body: {other}")),
        }
        .into()
    }

    pub fn path(error: PathError, _req: &HttpRequest) -> actix_web::Error {
        AppError::unprocessable(format!("Invalid path parameter: {error}")).into()
    }

    /// A `PathConfig` for routes whose `{id}` is a UUID (`web::Path<Uuid>`):
    /// anything else is 422 `Invalid <what> id: expected a UUID`.
    pub fn uuid_path(what: &'static str) -> actix_web::web::PathConfig {
        actix_web::web::PathConfig::default().error_handler(move |_, _| {
            AppError::unprocessable(format!("Invalid {what} id: expected a UUID")).into()
        })
    }

    pub fn query(error: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
        AppError::unprocessable(format!("Invalid query parameter: {error}")).into()
    }
}
