//! The request-body time-out (`KEYGATE_BODY_TIMEOUT_MS`).
//!
//! actix's `client_request_timeout` covers only the request head; once a
//! handler waits for the body, a client that promised 100 bytes and sent 4
//! would hold the connection and a worker slot for ever. [`arm`], called by
//! the server on every request before it is routed, wraps the body of each
//! request that has one in a stream that fails once the deadline (counted
//! from when the head was read) has passed. Whatever was reading it (a
//! `Bytes` or JSON extractor, the gateway) fails in its own way; the server
//! then answers [`timed_out`] instead: `408` with a JSON body, the
//! connection marked to close, since the rest of the body may still be on
//! its way. (With a `Content-Length` body actix then closes the connection;
//! a chunked body that was cut short is drained by actix on that connection
//! instead, which holds the connection but no worker.)

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::{header, StatusCode};
use actix_web::web::Bytes;
use actix_web::{HttpMessage, HttpRequest, ResponseError};
use futures_util::Stream;

use crate::error::AppError;

pub const BODY_TIMED_OUT: &str = "Request body timed out";

/// A body's deadline, armed by [`arm`].
pub struct Armed(Rc<Cell<bool>>);

impl Armed {
    /// Whether the deadline passed while the body was being read.
    pub fn expired(&self) -> bool {
        self.0.get()
    }
}

/// Wraps the body of `req`, if it announces one, in a stream that fails
/// once `timeout` has passed; requests without a body need no timer.
pub fn arm(req: &mut ServiceRequest, timeout: Duration) -> Option<Armed> {
    if !has_body(req) {
        return None;
    }
    let expired = Rc::new(Cell::new(false));
    let stream = Deadline {
        inner: req.take_payload(),
        sleep: Box::pin(tokio::time::sleep(timeout)),
        expired: expired.clone(),
    };
    let payload: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(stream);
    req.set_payload(Payload::from(payload));
    Some(Armed(expired))
}

/// The answer to a request whose body did not arrive in time.
pub fn timed_out(request: HttpRequest) -> ServiceResponse {
    tracing::debug!("request body did not arrive in time");
    let mut answer = AppError::new(StatusCode::REQUEST_TIMEOUT, BODY_TIMED_OUT).error_response();
    answer
        .head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
    ServiceResponse::new(request, answer)
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
