//! Batched usage counters.
//!
//! Authenticating with a key records the use in memory only; a background
//! task writes the sums (`total_uses + n`, latest `last_used_at`) in one
//! transaction per interval, and the server flushes once more after a
//! graceful shutdown. A failed write puts the counts back, so none are lost
//! while the database is briefly away.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::NaiveDateTime;

use crate::db::{self, DbPool};
use crate::error::AppError;
use crate::keys::store;

#[derive(Debug, Clone, Copy)]
struct Pending {
    uses: i64,
    last_used_at: NaiveDateTime,
}

pub struct UsageRecorder {
    pool: DbPool,
    pending: Mutex<HashMap<String, Pending>>,
    /// Serialises flushes so counts are written in order.
    flushing: tokio::sync::Mutex<()>,
}

impl UsageRecorder {
    pub fn new(pool: DbPool) -> Self {
        Self {
            pool,
            pending: Mutex::new(HashMap::new()),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    /// Counts one use of a key. Never touches the database.
    pub fn record(&self, key_id: &str, at: NaiveDateTime) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        match pending.get_mut(key_id) {
            Some(entry) => {
                entry.uses += 1;
                entry.last_used_at = entry.last_used_at.max(at);
            }
            None => {
                pending.insert(
                    key_id.to_string(),
                    Pending {
                        uses: 1,
                        last_used_at: at,
                    },
                );
            }
        }
    }

    fn take(&self) -> HashMap<String, Pending> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *pending)
    }

    fn put_back(&self, batch: HashMap<String, Pending>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for (key_id, counts) in batch {
            let entry = pending.entry(key_id).or_insert(Pending {
                uses: 0,
                last_used_at: counts.last_used_at,
            });
            entry.uses += counts.uses;
            entry.last_used_at = entry.last_used_at.max(counts.last_used_at);
        }
    }

    /// Writes every pending count; returns how many keys were updated.
    pub async fn flush(&self) -> Result<usize, AppError> {
        let _guard = self.flushing.lock().await;
        let batch = self.take();
        if batch.is_empty() {
            return Ok(0);
        }
        let rows: Vec<(String, i64, NaiveDateTime)> = batch
            .iter()
            .map(|(id, p)| (id.clone(), p.uses, p.last_used_at))
            .collect();
        let count = rows.len();
        let result = db::run(&self.pool, move |conn| {
            store::add_usage(conn, &rows).map_err(AppError::from)
        })
        .await;
        match result {
            Ok(()) => Ok(count),
            Err(e) => {
                self.put_back(batch);
                Err(e)
            }
        }
    }

    /// Number of keys with counts not yet written.
    pub fn pending_keys(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}
