//! Per-key rate limits, shared by every instance on one database without a
//! database round trip per request.
//!
//! A limit is `requests` per window of `per_seconds`, fixed windows aligned
//! to the Unix epoch (so every instance agrees where a window starts). Each
//! instance decides from memory: a [`KeyWindow`] per limited key holds the
//! window's global count as last read from the database plus what this
//! instance accepted since. A background sync ([`RateLimiter::sync`], every
//! `KEYGATE_RATE_LIMIT_SYNC_MS`) takes only keys that had traffic, adds
//! each one's local delta to the shared row of its window
//! (`count = count + delta`, an upsert) and reads the total back, so each
//! instance learns what the others accepted.
//!
//! The bound: an instance cannot see what the others accepted since its
//! last sync, so across instances a window may accept up to about one sync
//! interval's worth of requests per other instance beyond the limit (and
//! never more than `requests` per instance). One instance alone never
//! exceeds the limit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;

use crate::db::{self, DbPool};
use crate::error::AppError;
use crate::keys::store;

pub const MAX_REQUESTS: i64 = 1_000_000_000;
pub const MAX_PER_SECONDS: i64 = 86_400;

pub const RATE_LIMITED: &str = "Rate limit exceeded";

const INVALID_RATE_LIMIT: &str =
    "rate_limit must be null or {\"requests\": N, \"per_seconds\": S} \
    with whole numbers, requests 1 to 1000000000 and per_seconds 1 to 86400";

/// At most `requests` per window of `per_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RateLimit {
    pub requests: i64,
    pub per_seconds: i64,
}

impl RateLimit {
    /// As the API shows it, for an audit entry's `detail`.
    pub fn to_json(self) -> Value {
        let mut fields = serde_json::Map::new();
        fields.insert("requests".into(), self.requests.into());
        fields.insert("per_seconds".into(), self.per_seconds.into());
        Value::Object(fields)
    }

    /// From the two stored columns; a partial or out-of-range pair (never
    /// written by keygate) limits to nothing rather than failing open.
    pub fn from_stored(requests: Option<i64>, per_seconds: Option<i64>) -> Option<RateLimit> {
        match (requests, per_seconds) {
            (None, None) => None,
            (requests, per_seconds) => Some(RateLimit {
                requests: requests.unwrap_or(0).clamp(0, MAX_REQUESTS),
                per_seconds: per_seconds.unwrap_or(1).clamp(1, MAX_PER_SECONDS),
            }),
        }
    }

    /// The request's `rate_limit`: `null` is no limit; anything but an
    /// object of exactly two whole numbers in range is a 422.
    pub fn parse(value: Value) -> Result<Option<RateLimit>, AppError> {
        let Value::Object(fields) = value else {
            return if value.is_null() {
                Ok(None)
            } else {
                Err(AppError::unprocessable(INVALID_RATE_LIMIT))
            };
        };
        if fields.len() != 2 {
            return Err(AppError::unprocessable(INVALID_RATE_LIMIT));
        }
        let whole = |name: &str, max: i64| {
            fields
                .get(name)
                .and_then(Value::as_i64)
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| AppError::unprocessable(INVALID_RATE_LIMIT))
        };
        Ok(Some(RateLimit {
            requests: whole("requests", MAX_REQUESTS)?,
            per_seconds: whole("per_seconds", MAX_PER_SECONDS)?,
        }))
    }

    /// True when this limit is no looser than `other`: no more requests
    /// at once, and no higher average rate.
    pub fn is_within(self, other: RateLimit) -> bool {
        self.requests <= other.requests
            && i128::from(self.requests) * i128::from(other.per_seconds)
                <= i128::from(other.requests) * i128::from(self.per_seconds)
    }

    /// The window `now` (Unix seconds) falls in: its start.
    fn window_start(self, now: i64) -> i64 {
        now - now.rem_euclid(self.per_seconds)
    }
}

/// What a limited key's request is told: whether it may go on, and the
/// `RateLimit-*` headers of its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub limit: i64,
    pub remaining: i64,
    /// Seconds until the window ends (at least 1).
    pub reset: i64,
}

/// One key's count in its current window on this instance.
#[derive(Debug, Default)]
struct WindowState {
    per_seconds: i64,
    start: i64,
    /// The window's count over every instance at the last sync (this
    /// instance's synced requests included).
    known: i64,
    /// Accepted here since, not yet sent.
    local: i64,
    /// Taken by a sync in progress.
    sending: i64,
}

/// A limited key's window on this instance. The lock is the key's own:
/// requests of different keys never wait for each other.
#[derive(Debug)]
pub struct KeyWindow {
    key_id: String,
    state: Mutex<WindowState>,
    /// True while the key waits in the sync queue.
    queued: AtomicBool,
}

impl KeyWindow {
    fn lock(&self) -> std::sync::MutexGuard<'_, WindowState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state for `limit`'s window at `now`, begun afresh when the
    /// window (or the limit's length) changed.
    fn current(state: &mut WindowState, limit: RateLimit, now: i64) {
        let start = limit.window_start(now);
        if state.start != start || state.per_seconds != limit.per_seconds {
            *state = WindowState {
                per_seconds: limit.per_seconds,
                start,
                ..WindowState::default()
            };
        }
    }

    fn verdict(state: &WindowState, limit: RateLimit, now: i64, allowed: bool) -> Verdict {
        let used = state.known + state.local + state.sending;
        Verdict {
            allowed,
            limit: limit.requests,
            remaining: (limit.requests - used).max(0),
            reset: (state.start + limit.per_seconds - now).max(1),
        }
    }
}

/// Every limited key's window on this instance, and the queue of those
/// with requests to share.
pub struct RateLimiter {
    pool: DbPool,
    windows: Mutex<HashMap<String, Arc<KeyWindow>>>,
    queue: Mutex<Vec<Arc<KeyWindow>>>,
    /// Syncs one at a time (the explicit one of a test or the shutdown,
    /// and the periodic one).
    syncing: tokio::sync::Mutex<()>,
    last_prune: Mutex<i64>,
}

/// Ended windows are deleted at most this often (seconds), and only this
/// long after they end.
const PRUNE_EVERY: i64 = 60;

impl RateLimiter {
    pub fn new(pool: DbPool) -> Self {
        Self {
            pool,
            windows: Mutex::new(HashMap::new()),
            queue: Mutex::new(Vec::new()),
            syncing: tokio::sync::Mutex::new(()),
            last_prune: Mutex::new(0),
        }
    }

    /// The window of a key, shared by every cached copy of it (once per
    /// cache fill), so a key read again keeps its count.
    pub fn window(&self, key_id: &str) -> Arc<KeyWindow> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        windows
            .entry(key_id.to_string())
            .or_insert_with(|| {
                Arc::new(KeyWindow {
                    key_id: key_id.to_string(),
                    state: Mutex::new(WindowState::default()),
                    queued: AtomicBool::new(false),
                })
            })
            .clone()
    }

    /// Counts one request of a limited key at `now` (Unix seconds) if the
    /// window has room; a refused request is not counted.
    pub fn admit(&self, window: &Arc<KeyWindow>, limit: RateLimit, now: i64) -> Verdict {
        let verdict = {
            let mut state = window.lock();
            KeyWindow::current(&mut state, limit, now);
            let used = state.known + state.local + state.sending;
            if used >= limit.requests {
                KeyWindow::verdict(&state, limit, now, false)
            } else {
                state.local += 1;
                KeyWindow::verdict(&state, limit, now, true)
            }
        };
        if verdict.allowed && !window.queued.swap(true, Ordering::AcqRel) {
            self.queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(window.clone());
        }
        verdict
    }

    /// The headers' values without counting a request (for an answer that
    /// was refused before the limit was asked).
    pub fn peek(&self, window: &KeyWindow, limit: RateLimit, now: i64) -> Verdict {
        let mut state = window.lock();
        KeyWindow::current(&mut state, limit, now);
        KeyWindow::verdict(&state, limit, now, true)
    }

    /// Shares every queued key's requests: adds them to the window's row
    /// and reads the total back. Returns how many keys were synced. On a
    /// failed write the requests stay pending for the next sync.
    pub async fn sync(&self) -> Result<usize, AppError> {
        let _one_at_a_time = self.syncing.lock().await;
        let queued = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()));
        let mut batch = Vec::with_capacity(queued.len());
        for window in queued {
            window.queued.store(false, Ordering::Release);
            let mut state = window.lock();
            if state.local > 0 {
                state.sending = state.local;
                state.local = 0;
                let delta = store::WindowDelta {
                    key_id: window.key_id.clone(),
                    window_seconds: state.per_seconds,
                    window_start: state.start,
                    delta: state.sending,
                };
                drop(state);
                batch.push((window, delta));
            }
        }
        let now = chrono::Utc::now().timestamp();
        let prune_before = self.prune_due(now).then(|| {
            self.forget_ended(now);
            now - PRUNE_EVERY
        });
        if batch.is_empty() && prune_before.is_none() {
            return Ok(0);
        }
        let deltas: Vec<store::WindowDelta> = batch.iter().map(|(_, d)| d.clone()).collect();
        let result = db::run(&self.pool, move |conn| {
            store::add_window_counts(conn, &deltas, prune_before)
        })
        .await;
        match result {
            Ok(totals) => {
                for ((window, delta), total) in batch.iter().zip(totals) {
                    let mut state = window.lock();
                    if state.start == delta.window_start
                        && state.per_seconds == delta.window_seconds
                    {
                        state.known = total;
                        state.sending = 0;
                    }
                }
                Ok(batch.len())
            }
            Err(error) => {
                for (window, delta) in &batch {
                    let mut state = window.lock();
                    if state.start == delta.window_start
                        && state.per_seconds == delta.window_seconds
                    {
                        state.local += state.sending;
                        state.sending = 0;
                        drop(state);
                        if !window.queued.swap(true, Ordering::AcqRel) {
                            self.queue
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(window.clone());
                        }
                    }
                }
                Err(error)
            }
        }
    }

    /// Keys with requests not yet shared (for tests and metrics).
    pub fn pending_keys(&self) -> usize {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn prune_due(&self, now: i64) -> bool {
        let mut last = self.last_prune.lock().unwrap_or_else(|p| p.into_inner());
        if now - *last >= PRUNE_EVERY {
            *last = now;
            true
        } else {
            false
        }
    }

    /// Drops the windows that ended and that no cached key holds. A window
    /// still running is kept even when its key left the cache (a PATCH, the
    /// cache's TTL), so the key read again keeps its count.
    fn forget_ended(&self, now: i64) {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        windows.retain(|_, window| {
            let state = window.lock();
            Arc::strong_count(window) > 1 || state.start + state.per_seconds > now
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_bounds_limits() {
        let ok = RateLimit::parse(json!({"requests": 5, "per_seconds": 60})).unwrap();
        assert_eq!(
            ok,
            Some(RateLimit {
                requests: 5,
                per_seconds: 60
            })
        );
        assert_eq!(RateLimit::parse(Value::Null).unwrap(), None);
        for bad in [
            json!({"requests": 0, "per_seconds": 60}),
            json!({"requests": 5, "per_seconds": 86_401}),
            json!({"requests": 1_000_000_001, "per_seconds": 1}),
            json!({"requests": 5.5, "per_seconds": 60}),
            json!({"requests": "5", "per_seconds": 60}),
            json!({"requests": 5}),
            json!({"requests": 5, "per_seconds": 60, "burst": 2}),
            json!(5),
        ] {
            assert!(RateLimit::parse(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn windows_align_to_the_epoch() {
        let limit = RateLimit {
            requests: 1,
            per_seconds: 60,
        };
        assert_eq!(limit.window_start(119), 60);
        assert_eq!(limit.window_start(120), 120);
    }

    #[test]
    fn stored_pairs_fail_closed() {
        assert_eq!(RateLimit::from_stored(None, None), None);
        assert_eq!(
            RateLimit::from_stored(Some(3), None),
            Some(RateLimit {
                requests: 3,
                per_seconds: 1
            })
        );
        assert_eq!(RateLimit::from_stored(None, Some(9)).unwrap().requests, 0);
    }
}
