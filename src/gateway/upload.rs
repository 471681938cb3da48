//! File uploads to a Langflow upstream: the caller's multipart body,
//! streamed as it arrives, at most `KEYGATE_MAX_UPLOAD_BYTES`.

use std::sync::{Arc, Mutex};

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;

use crate::error::AppError;
use crate::outbound::ForwardBody;

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

/// Checks what the request head says before anything else is done: a
/// declared length within `limit`, a multipart body.
pub fn check_head(req: &HttpRequest, limit: usize) -> Result<(), AppError> {
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
    Ok(())
}

/// The caller's body as a body for the upstream request, and what tells
/// why it stopped early if it does. A local task pumps actix's payload
/// into the upstream request's body, with back pressure, counting against
/// the limit, and stops when either side goes away.
pub fn streamed(payload: web::Payload, limit: usize) -> (ForwardBody, Refusal) {
    let refused = Refusal::default();
    let (sender, receiver) = tokio::sync::mpsc::channel(UPLOAD_QUEUE);
    actix_web::rt::spawn(pump(payload, sender, limit, refused.clone()));
    (ForwardBody::Stream(receiver), refused)
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
