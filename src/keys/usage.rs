//! Batched usage counters.
//!
//! Each key in use has one [`KeyCounters`] (two atomics) shared by the
//! verification cache and this registry: authenticating with a key is two
//! atomic operations, no lock and no database write. A background task
//! writes the sums (`total_uses + n`, latest `last_used_at`) in one
//! transaction per interval, and the server flushes once more after a
//! graceful shutdown. A failed write puts the counts back, so none are lost
//! while the database is briefly away.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDateTime};

use crate::db::{self, DbPool};
use crate::error::AppError;
use crate::keys::store;

/// Uses of one key not yet written.
#[derive(Debug, Default)]
pub struct KeyCounters {
    uses: AtomicI64,
    /// Microseconds since the Unix epoch (UTC) of the latest use.
    last_used_micros: AtomicI64,
}

impl KeyCounters {
    /// Counts one use at `at`.
    pub fn record(&self, at: NaiveDateTime) {
        self.uses.fetch_add(1, Ordering::Relaxed);
        self.last_used_micros
            .fetch_max(at.and_utc().timestamp_micros(), Ordering::Relaxed);
    }
}

pub struct UsageRecorder {
    pool: DbPool,
    registry: Mutex<HashMap<String, Arc<KeyCounters>>>,
    /// Flushes take it exclusively (one at a time, so counts are written in
    /// order); readers of stored-plus-pending counts share it.
    flushing: tokio::sync::RwLock<()>,
}

impl UsageRecorder {
    pub fn new(pool: DbPool) -> Self {
        Self {
            pool,
            registry: Mutex::new(HashMap::new()),
            flushing: tokio::sync::RwLock::new(()),
        }
    }

    /// The counters of a key, created on first use (once per cache fill).
    pub fn counters(&self, key_id: &str) -> Arc<KeyCounters> {
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        registry.entry(key_id.to_string()).or_default().clone()
    }

    /// Takes every pending count, leaving the counters at zero.
    fn take(&self) -> Vec<(String, Arc<KeyCounters>, i64, i64)> {
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = Vec::new();
        registry.retain(|key_id, counters| {
            let uses = counters.uses.swap(0, Ordering::AcqRel);
            if uses > 0 {
                let last = counters.last_used_micros.load(Ordering::Acquire);
                batch.push((key_id.clone(), counters.clone(), uses, last));
            }
            // Counters nobody else holds (evicted from the cache) and with
            // nothing pending are dropped; the next use recreates them.
            uses > 0 || Arc::strong_count(counters) > 1
        });
        batch
    }

    /// Writes every pending count; returns how many keys were updated.
    pub async fn flush(&self) -> Result<usize, AppError> {
        let _guard = self.flushing.write().await;
        let batch = self.take();
        if batch.is_empty() {
            return Ok(0);
        }
        let rows: Vec<(String, i64, NaiveDateTime)> = batch
            .iter()
            .map(|(id, _, uses, last)| {
                let last = DateTime::from_timestamp_micros(*last)
                    .map(|t| t.naive_utc())
                    .unwrap_or_else(db::now);
                (id.clone(), *uses, last)
            })
            .collect();
        let count = rows.len();
        let result = db::run(&self.pool, move |conn| store::add_usage(conn, &rows)).await;
        if result.is_err() {
            for (key_id, counters, uses, _) in batch {
                counters.uses.fetch_add(uses, Ordering::AcqRel);
                self.registry
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(key_id)
                    .or_insert(counters);
            }
        }
        result.map(|()| count)
    }

    /// Holds flushes off while a reader reads stored counts and then adds
    /// [`UsageRecorder::pending`] to them: with no flush in between, every
    /// use is counted exactly once and the reader writes nothing. Readers
    /// do not wait for each other.
    pub async fn hold_flushes(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.flushing.read().await
    }

    /// The uses of a key not yet written, and the latest of them.
    pub fn pending(&self, key_id: &str) -> (i64, Option<NaiveDateTime>) {
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        match registry.get(key_id) {
            Some(counters) => {
                let uses = counters.uses.load(Ordering::Acquire);
                let last = (uses > 0)
                    .then(|| counters.last_used_micros.load(Ordering::Acquire))
                    .and_then(DateTime::from_timestamp_micros)
                    .map(|t| t.naive_utc());
                (uses, last)
            }
            None => (0, None),
        }
    }

    /// Number of keys with counts not yet written.
    pub fn pending_keys(&self) -> usize {
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        registry
            .values()
            .filter(|c| c.uses.load(Ordering::Relaxed) > 0)
            .count()
    }
}
