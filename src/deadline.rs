//! The request-body time-out (`KEYGATE_BODY_TIMEOUT_MS`).
//!
//! actix's `client_request_timeout` covers only the request head; once a
//! handler waits for the body, a client that promised 100 bytes and sent 4
//! would hold the connection and a worker slot for ever. [`body_deadline`]
//! wraps the body of every request that has one in a stream that fails
//! once the deadline (counted from when the head was read) has passed.
//! Whatever was reading it (a `Bytes` or JSON extractor, the gateway)
//! fails in its own way; the middleware then answers `408` with a JSON
//! body instead and marks the connection to close, since the rest of the
//! body may still be on its way. (With a `Content-Length` body actix then
//! closes the connection; a chunked body that was cut short is drained by
//! actix on that connection instead, which holds the connection but no
//! worker.)

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::{self, Bytes};
use actix_web::{HttpMessage, ResponseError};
use futures_util::Stream;

use crate::error::AppError;
use crate::state::AppState;

pub const BODY_TIMED_OUT: &str = "Request body timed out";

/// See the module doc.
pub async fn body_deadline<B: MessageBody>(
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let timeout = match req.app_data::<web::Data<AppState>>() {
        Some(state) => state.config.body_timeout,
        None => {
            let error = AppError::internal("application state missing");
            return Ok(req.error_response(error).map_into_right_body());
        }
    };
    if !has_body(&req) {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let expired = Rc::new(Cell::new(false));
    let stream = Deadline {
        inner: req.take_payload(),
        sleep: Box::pin(tokio::time::sleep(timeout)),
        expired: expired.clone(),
    };
    let payload: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(stream);
    req.set_payload(Payload::from(payload));
    // A middleware error (there is none below today) is passed on as is.
    let response = next.call(req).await?;
    if !expired.get() {
        return Ok(response.map_into_left_body());
    }
    tracing::debug!("request body did not arrive in time");
    let mut answer = AppError::new(StatusCode::REQUEST_TIMEOUT, BODY_TIMED_OUT).error_response();
    answer
        .head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
    let (request, _) = response.into_parts();
    Ok(ServiceResponse::new(request, answer).map_into_right_body())
}

/// Whether the request announces a body (a length above 0, or chunks);
/// others need no timer.
fn has_body(req: &ServiceRequest) -> bool {
    let headers = req.headers();
    let length = headers.get(header::CONTENT_LENGTH);
    headers.contains_key(header::TRANSFER_ENCODING) || length.is_some_and(|v| v.as_bytes() != b"0")
}

/// A body that fails once its deadline has passed.
struct Deadline {
    inner: Payload,
    sleep: Pin<Box<tokio::time::Sleep>>,
    expired: Rc<Cell<bool>>,
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.expired.get() {
            return Poll::Ready(None);
        }
        // Checked before reading, so a body that trickles in cannot pass
        // the deadline either.
        if self.sleep.is_elapsed() {
            return Poll::Ready(Some(Err(self.expire())));
        }
        if let Poll::Ready(item) = Pin::new(&mut self.inner).poll_next(cx) {
            return Poll::Ready(item);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(self.expire()))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Deadline {
    fn expire(&self) -> PayloadError {
        self.expired.set(true);
        PayloadError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            BODY_TIMED_OUT,
        ))
    }
}
