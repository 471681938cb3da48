//! Batched usage counters.
//!
//! Each key in use has one [`KeyCounters`] shared by the verification cache
//! and this registry: counting a request is a few atomic operations on the
//! key's own counters, no lock shared between keys and no database write.
//! A background task writes the sums in one transaction per interval
//! (`total_uses + n`, the latest `last_used_at` and `last_used_from`, and
//! the hourly and daily buckets of `GET /api/v1/api_key/{id}/usage`), and
//! the server flushes once more after a graceful shutdown. A failed write
//! puts the counts back, so none are lost while the database is briefly
//! away.
//!
//! Counts are kept by the hour they happened in: when a key's first
//! request of a new hour comes, the counts of the hour before are set
//! aside (under the key's own lock, once an hour) and written with it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDateTime};

use crate::db::{self, DbPool};
use crate::error::AppError;
use crate::keys::store;

const MICROS_PER_HOUR: i64 = 3_600_000_000;

/// One hour's counts: (Unix hour, requests, refused).
pub type HourCount = (i64, i64, i64);

/// Uses of one key not yet written.
#[derive(Debug, Default)]
pub struct KeyCounters {
    uses: AtomicI64,
    refused: AtomicI64,
    /// The Unix hour `uses` and `refused` count for.
    hour: AtomicI64,
    /// Microseconds since the Unix epoch (UTC) of the latest use.
    last_used_micros: AtomicI64,
    /// The latest use's client address as an IPv6 address (IPv4 mapped),
    /// high and low halves; both 0: none yet. Written under `earlier`'s
    /// lock, and only when it changes.
    from_high: AtomicU64,
    from_low: AtomicU64,
    /// Counts of hours before `hour`, not yet written.
    earlier: Mutex<Vec<HourCount>>,
}

/// What a key has not yet written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pending {
    pub uses: i64,
    pub refused: i64,
    pub last_used: Option<NaiveDateTime>,
    pub last_used_from: Option<IpAddr>,
    pub hours: Vec<HourCount>,
}

impl KeyCounters {
    /// Counts one use at `at` from the client address `from`.
    pub fn record(&self, at: NaiveDateTime, from: IpAddr) {
        let micros = at.and_utc().timestamp_micros();
        self.roll(micros.div_euclid(MICROS_PER_HOUR));
        self.uses.fetch_add(1, Ordering::Relaxed);
        self.last_used_micros.fetch_max(micros, Ordering::Relaxed);
        let bits = u128::from(match from.to_canonical() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        });
        let (high, low) = ((bits >> 64) as u64, bits as u64);
        if self.from_high.load(Ordering::Relaxed) != high
            || self.from_low.load(Ordering::Relaxed) != low
        {
            let _guard = self.lock();
            self.from_high.store(high, Ordering::Relaxed);
            self.from_low.store(low, Ordering::Relaxed);
        }
    }

    /// Counts one of the uses as refused (for the key's own policy).
    pub fn refuse(&self, at: NaiveDateTime) {
        self.roll(at.and_utc().timestamp_micros().div_euclid(MICROS_PER_HOUR));
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<HourCount>> {
        self.earlier.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the counts of a past hour aside when `hour` is a new one.
    fn roll(&self, hour: i64) {
        if hour <= self.hour.load(Ordering::Acquire) {
            return;
        }
        let mut earlier = self.lock();
        let previous = self.hour.load(Ordering::Acquire);
        if hour <= previous {
            return;
        }
        let uses = self.uses.swap(0, Ordering::AcqRel);
        let refused = self.refused.swap(0, Ordering::AcqRel);
        if uses > 0 || refused > 0 {
            earlier.push((previous, uses, refused));
        }
        self.hour.store(hour, Ordering::Release);
    }

    fn address(&self) -> Option<IpAddr> {
        let bits = (u128::from(self.from_high.load(Ordering::Relaxed)) << 64)
            | u128::from(self.from_low.load(Ordering::Relaxed));
        (bits != 0).then(|| IpAddr::V6(Ipv6Addr::from(bits)).to_canonical())
    }

    fn last_used(&self) -> Option<NaiveDateTime> {
        let micros = self.last_used_micros.load(Ordering::Acquire);
        (micros > 0)
            .then(|| DateTime::from_timestamp_micros(micros))
            .flatten()
            .map(|t| t.naive_utc())
    }

    /// Every count not yet written, by hour; `take` empties them.
    fn pending(&self, take: bool) -> Pending {
        let mut earlier = self.lock();
        let mut hours = if take {
            std::mem::take(&mut *earlier)
        } else {
            earlier.clone()
        };
        let (uses, refused) = if take {
            (
                self.uses.swap(0, Ordering::AcqRel),
                self.refused.swap(0, Ordering::AcqRel),
            )
        } else {
            (
                self.uses.load(Ordering::Acquire),
                self.refused.load(Ordering::Acquire),
            )
        };
        if uses > 0 || refused > 0 {
            hours.push((self.hour.load(Ordering::Acquire), uses, refused));
        }
        let total = hours.iter().map(|(_, uses, _)| uses).sum();
        let any = !hours.is_empty();
        Pending {
            uses: total,
            refused: hours.iter().map(|(_, _, refused)| refused).sum(),
            last_used: any.then(|| self.last_used()).flatten(),
            last_used_from: any.then(|| self.address()).flatten(),
            hours,
        }
    }

    /// Puts the counts of a failed write back.
    fn restore(&self, hours: Vec<HourCount>) {
        self.lock().extend(hours);
    }
}

pub struct UsageRecorder {
    pool: DbPool,
    registry: Mutex<HashMap<String, Arc<KeyCounters>>>,
    /// Flushes take it exclusively (one at a time, so counts are written in
    /// order); readers of stored-plus-pending counts share it.
    flushing: tokio::sync::RwLock<()>,
    /// When old buckets were last deleted (Unix seconds).
    last_prune: Mutex<i64>,
}

/// Old buckets are deleted at most this often (seconds).
const PRUNE_EVERY: i64 = 600;
/// How long buckets are kept: hours for three days, days for 400.
const KEEP_HOURS: i64 = 72;
const KEEP_DAYS: i64 = 400;

impl UsageRecorder {
    pub fn new(pool: DbPool) -> Self {
        Self {
            pool,
            registry: Mutex::new(HashMap::new()),
            flushing: tokio::sync::RwLock::new(()),
            last_prune: Mutex::new(0),
        }
    }

    /// The counters of a key, created on first use (once per cache fill).
    pub fn counters(&self, key_id: &str) -> Arc<KeyCounters> {
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        registry.entry(key_id.to_string()).or_default().clone()
    }

    /// Takes every pending count, leaving the counters at zero.
    fn take(&self) -> Vec<(Arc<KeyCounters>, store::UsageDelta)> {
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = Vec::new();
        registry.retain(|key_id, counters| {
            let pending = counters.pending(true);
            let any = !pending.hours.is_empty();
            if any {
                let delta = store::UsageDelta {
                    key_id: key_id.clone(),
                    uses: pending.uses,
                    last_used_at: pending.last_used.unwrap_or_else(db::now),
                    last_used_from: pending.last_used_from.map(|ip| ip.to_string()),
                    hours: pending
                        .hours
                        .iter()
                        .map(|&(hour, requests, refused)| store::Bucket {
                            start: hour_start(hour),
                            requests,
                            refused,
                        })
                        .collect(),
                };
                batch.push((counters.clone(), delta));
            }
            // Counters nobody else holds (evicted from the cache) and with
            // nothing pending are dropped; the next use recreates them.
            any || Arc::strong_count(counters) > 1
        });
        batch
    }

    /// Writes every pending count; returns how many keys were updated.
    pub async fn flush(&self) -> Result<usize, AppError> {
        let _guard = self.flushing.write().await;
        let batch = self.take();
        let now = db::now();
        let prune = self.prune_due(now.and_utc().timestamp()).then(|| {
            (
                now - chrono::Duration::hours(KEEP_HOURS),
                now - chrono::Duration::days(KEEP_DAYS),
            )
        });
        if batch.is_empty() && prune.is_none() {
            return Ok(0);
        }
        let rows: Vec<store::UsageDelta> = batch.iter().map(|(_, delta)| delta.clone()).collect();
        let count = rows.len();
        let result = db::run(&self.pool, move |conn| store::add_usage(conn, &rows, prune)).await;
        if result.is_err() {
            for (counters, delta) in batch {
                let hours = delta
                    .hours
                    .iter()
                    .map(|b| (b.start.and_utc().timestamp() / 3600, b.requests, b.refused))
                    .collect();
                counters.restore(hours);
                self.registry
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(delta.key_id)
                    .or_insert(counters);
            }
        }
        result.map(|()| count)
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

    /// Holds flushes off while a reader reads stored counts and then adds
    /// [`UsageRecorder::pending`] to them: with no flush in between, every
    /// use is counted exactly once and the reader writes nothing. Readers
    /// do not wait for each other.
    pub async fn hold_flushes(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.flushing.read().await
    }

    /// The uses of a key not yet written here, by hour, and the latest.
    pub fn pending(&self, key_id: &str) -> Pending {
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        registry
            .get(key_id)
            .map(|counters| counters.pending(false))
            .unwrap_or_default()
    }

    /// Number of keys with counts not yet written.
    pub fn pending_keys(&self) -> usize {
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        registry
            .values()
            .filter(|c| !c.pending(false).hours.is_empty())
            .count()
    }
}

/// The start of a Unix hour, as stored.
pub fn hour_start(hour: i64) -> NaiveDateTime {
    DateTime::from_timestamp(hour * 3600, 0)
        .map(|t| t.naive_utc())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn counts_by_hour_with_the_latest_address() {
        let counters = KeyCounters::default();
        let here: IpAddr = "127.0.0.1".parse().unwrap();
        let there: IpAddr = "::1".parse().unwrap();
        counters.record(at("2026-12-01 13:59:00"), here);
        counters.refuse(at("2026-12-01 13:59:00"));
        counters.record(at("2026-12-01 14:00:01"), there);
        counters.record(at("2026-12-01 14:10:00"), here);
        let pending = counters.pending(false);
        let hour = |text: &str| at(text).and_utc().timestamp() / 3600;
        assert_eq!(
            pending.hours,
            vec![
                (hour("2026-12-01 13:00:00"), 1, 1),
                (hour("2026-12-01 14:00:00"), 2, 0)
            ]
        );
        assert_eq!((pending.uses, pending.refused), (3, 1));
        assert_eq!(pending.last_used, Some(at("2026-12-01 14:10:00")));
        assert_eq!(pending.last_used_from, Some(here));
        assert_eq!(counters.pending(true), pending);
        assert!(counters.pending(false).hours.is_empty());
        assert_eq!(
            hour_start(hour("2026-12-01 14:00:00")),
            at("2026-12-01 14:00:00")
        );
    }
}
