//! The parts of the gateway only a Langflow upstream has: file upload
//! (`POST /api/v1/files/upload/{flow}`, a multipart body streamed to
//! Langflow as it arrives, at most `KEYGATE_MAX_UPLOAD_BYTES`), and the
//! rewriting of Langflow's flow id into keygate's in answers, and back in
//! request bodies.

use std::sync::{Arc, Mutex};

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::{Stream, StreamExt};

use super::{forward, Gateway, OutBody, Route};
use crate::error::AppError;
use crate::identity::FlowCaller;

/// Chunks of the caller's upload in flight to the upstream, at most.
const UPLOAD_QUEUE: usize = 4;

/// Why a streamed body stopped before its end, when it was the caller's
/// doing: the upstream call then fails, and this is the answer instead of
/// a 502.
#[derive(Clone, Default)]
pub struct Refusal(Arc<Mutex<Option<AppError>>>);

impl Refusal {
    fn set(&self, error: AppError) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(error);
        }
    }

    pub fn get(&self) -> Option<AppError> {
        self.0.lock().ok().and_then(|slot| slot.clone())
    }
}

fn too_large(limit: usize) -> AppError {
    AppError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("The upload is larger than {limit} bytes (KEYGATE_MAX_UPLOAD_BYTES)"),
    )
}

/// `POST /api/v1/files/upload/{flow}`: the caller is checked and the flow
/// found before a byte of the body is read; the body then goes to
/// Langflow's own upload route chunk by chunk, never held whole.
pub async fn upload(
    gateway: Gateway,
    caller: FlowCaller,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let limit = gateway.state.config.max_upload_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    if !multipart {
        return Err(AppError::unprocessable(
            "A file upload is a multipart/form-data body with the file in the field \"file\"",
        ));
    }
    let prepared = gateway.prepare(caller, &path, Route::Upload).await?;
    let refused = Refusal::default();
    let (sender, receiver) = tokio::sync::mpsc::channel(UPLOAD_QUEUE);
    // actix's payload lives on this worker's thread; reqwest wants a body
    // it can move. A local task pumps one into the other, with back
    // pressure, and stops when either side goes away.
    actix_web::rt::spawn(pump(payload, sender, limit, refused.clone()));
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    let body = OutBody::Stream {
        body: reqwest::Body::wrap_stream(body),
        refused,
    };
    forward(&gateway.state, &req, &prepared, Route::Upload, body).await
}

type Chunk = Result<web::Bytes, std::io::Error>;

async fn pump(
    mut payload: web::Payload,
    sender: tokio::sync::mpsc::Sender<Chunk>,
    limit: usize,
    refused: Refusal,
) {
    let mut total = 0usize;
    while let Some(chunk) = payload.next().await {
        let item = match chunk {
            Ok(bytes) => {
                total = total.saturating_add(bytes.len());
                if total > limit {
                    refused.set(too_large(limit));
                    Err(std::io::Error::other("upload too large"))
                } else {
                    Ok(bytes)
                }
            }
            Err(error) => {
                tracing::debug!(%error, "upload body broke off");
                refused.set(AppError::new(
                    StatusCode::BAD_REQUEST,
                    "The upload body broke off before its end",
                ));
                Err(std::io::Error::other("upload body broke off"))
            }
        };
        let failed = item.is_err();
        if sender.send(item).await.is_err() || failed {
            return;
        }
    }
}

/// `body` with every `from` replaced by `to`.
pub fn replace_all(body: &web::Bytes, from: &str, to: &str) -> web::Bytes {
    let mut replacer = Replacer::new(from, to);
    let mut out = replacer.push(body);
    out.extend_from_slice(&replacer.finish());
    web::Bytes::from(out)
}

/// Replaces one byte string by another across the chunks of a stream.
/// Only a chunk's tail that could be the start of `from` waits for the
/// next chunk, so a streamed event is never held back (events end in a
/// newline, which starts no id).
struct Replacer {
    from: Vec<u8>,
    to: Vec<u8>,
    carry: Vec<u8>,
}

impl Replacer {
    fn new(from: &str, to: &str) -> Self {
        Replacer {
            from: from.as_bytes().to_vec(),
            to: to.as_bytes().to_vec(),
            carry: Vec::new(),
        }
    }

    fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(chunk);
        if self.from.is_empty() || self.from == self.to {
            return buf;
        }
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        while i < buf.len() {
            let rest = &buf[i..];
            if rest.starts_with(&self.from) {
                out.extend_from_slice(&self.to);
                i += self.from.len();
            } else if rest.len() < self.from.len() && self.from.starts_with(rest) {
                self.carry = rest.to_vec();
                break;
            } else {
                out.push(buf[i]);
                i += 1;
            }
        }
        out
    }

    fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.carry)
    }
}

/// The upstream's answer with Langflow's flow id replaced by keygate's.
pub fn rewrite_stream<S>(
    inner: S,
    from: &str,
    to: &str,
) -> impl Stream<Item = Result<web::Bytes, AppError>> + 'static
where
    S: Stream<Item = Result<web::Bytes, AppError>> + Unpin + 'static,
{
    let replacer = Replacer::new(from, to);
    futures_util::stream::unfold(
        (inner, replacer, false),
        |(mut inner, mut replacer, done)| async move {
            if done {
                return None;
            }
            match inner.next().await {
                Some(Ok(chunk)) => {
                    let out = web::Bytes::from(replacer.push(&chunk));
                    Some((Ok(out), (inner, replacer, false)))
                }
                Some(Err(error)) => Some((Err(error), (inner, replacer, true))),
                None => {
                    let rest = replacer.finish();
                    if rest.is_empty() {
                        None
                    } else {
                        Some((Ok(web::Bytes::from(rest)), (inner, replacer, true)))
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FROM: &str = "11111111-2222-3333-4444-555555555555";
    const TO: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

    #[test]
    fn replaces_across_chunk_boundaries_without_holding_back_events() {
        let text = format!("{{\"flow_id\": \"{FROM}\"}}\n\n{{\"file_path\": \"{FROM}/a.txt\"}}");
        let expected = text.replace(FROM, TO);
        for split in 0..text.len() {
            let mut r = Replacer::new(FROM, TO);
            let mut out = r.push(&text.as_bytes()[..split]);
            out.extend(r.push(&text.as_bytes()[split..]));
            out.extend(r.finish());
            assert_eq!(
                String::from_utf8(out).unwrap(),
                expected,
                "split at {split}"
            );
        }
        let mut r = Replacer::new(FROM, TO);
        let event = b"{\"event\": \"token\"}\n\n";
        assert_eq!(r.push(event), event.to_vec(), "an event is passed on whole");
        let partial = &FROM.as_bytes()[..10];
        assert!(r.push(partial).is_empty(), "a possible id waits");
        assert_eq!(r.finish(), partial.to_vec());
    }

    #[test]
    fn replace_all_leaves_other_bytes_alone() {
        let body = web::Bytes::from(format!("session {FROM} and {FROM}x, not 1111"));
        assert_eq!(
            replace_all(&body, FROM, TO),
            web::Bytes::from(format!("session {TO} and {TO}x, not 1111"))
        );
    }
}
