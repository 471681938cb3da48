//! `X-Request-Id`: the id that ties a request's answer, its log lines and
//! the upstream call of a run together.
//!
//! The caller's id is kept when it is sane: 1 to [`MAX_LEN`] visible ASCII
//! characters (no spaces, no control characters, so it cannot break a log
//! line) that do not look like an API key (no `sk-` in any case: a key
//! pasted into the wrong header must not reach the log). Anything else is
//! replaced by a new random UUID. The server puts the id in the request's
//! extensions, on every answer and in the access log; the gateway forwards
//! it upstream.

use actix_web::http::header::HeaderValue;
use actix_web::{HttpMessage, HttpRequest};

pub const HEADER: &str = "x-request-id";
/// The longest caller id that is kept.
pub const MAX_LEN: usize = 128;

/// A request's id, as the header value it is sent back in.
#[derive(Debug, Clone)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The caller's id if it is acceptable, else a new one.
    pub fn from_caller_or_new(sent: Option<&HeaderValue>) -> Self {
        match sent {
            Some(value) if is_acceptable(value.as_bytes()) => RequestId(value.clone()),
            _ => Self::generate(),
        }
    }

    /// A new random (version 4) UUID. Ids are not secrets: they come from
    /// the thread's generator, not from a system call per request.
    pub fn generate() -> Self {
        let uuid = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let text = uuid.hyphenated().encode_lower(&mut text);
        RequestId(HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-")))
    }

    pub fn as_str(&self) -> &str {
        // Only visible ASCII is ever kept, which is always valid text.
        self.0.to_str().unwrap_or("-")
    }

    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// The id the server gave this request.
    pub fn of(req: &HttpRequest) -> Option<RequestId> {
        req.extensions().get::<RequestId>().cloned()
    }
}

fn is_acceptable(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id.iter().all(|b| (0x21..=0x7e).contains(b))
        && !id.windows(3).any(|w| w.eq_ignore_ascii_case(b"sk-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(id: &str) -> bool {
        let value = HeaderValue::from_str(id).unwrap();
        RequestId::from_caller_or_new(Some(&value)).as_str() == id
    }

    #[test]
    fn keeps_sane_ids_and_replaces_the_rest() {
        assert!(kept("abc-123"));
        assert!(kept(&"x".repeat(MAX_LEN)));
        assert!(kept(
            "trace=4bf92f3577b34da6a3ce929d0e0e4736;span=00f067aa0ba902b7"
        ));
        assert!(!kept(&"x".repeat(MAX_LEN + 1)));
        assert!(!kept("has space"));
        assert!(!kept(""));
        assert!(!kept("sk-abcdefghij"));
        assert!(!kept("my-SK-key"));
        let generated = RequestId::from_caller_or_new(None);
        assert_eq!(generated.as_str().len(), 36);
        assert!(uuid::Uuid::parse_str(generated.as_str()).is_ok());
        assert_ne!(generated.as_str(), RequestId::generate().as_str());
    }
}
