//! The exchange of Langflow's flow id for keygate's: in answers, streamed,
//! and in request bodies (see the gateway's module doc).

use actix_web::web;
use futures_util::{Stream, StreamExt};

use crate::error::AppError;

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
