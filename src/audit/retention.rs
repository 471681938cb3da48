//! Pruning: events older than `KEYGATE_AUDIT_RETENTION_DAYS` are deleted
//! by a background task, once at start and then every [`PRUNE_EVERY`].
//! Several instances may prune the same database; the deletes are
//! idempotent.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::store;
use crate::db::{self, DbConnection, DbPool};
use crate::error::AppError;

/// How often the task prunes after the first time.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Deletes the events older than `days` days before now; how many went.
pub fn prune(conn: &mut DbConnection, days: u32) -> Result<usize, AppError> {
    let cutoff = db::now() - chrono::Duration::days(i64::from(days));
    store::delete_older_than(conn, cutoff)
}

/// The running pruner; [`Pruner::stop`] ends it.
pub struct Pruner {
    stop: Arc<Notify>,
    task: actix_web::rt::task::JoinHandle<()>,
}

impl Pruner {
    /// Starts pruning now and every [`PRUNE_EVERY`] after. A failed prune
    /// is logged and tried again at the next tick.
    pub fn start(pool: DbPool, days: u32) -> Pruner {
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        let task = actix_web::rt::spawn(async move {
            let mut ticker = tokio::time::interval(PRUNE_EVERY);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stopped.notified() => return,
                }
                match db::run(&pool, move |conn| prune(conn, days)).await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(deleted, days, "old audit events pruned"),
                    Err(error) => {
                        tracing::warn!(error = %error.detail(), "audit events not pruned; will retry")
                    }
                }
            }
        });
        Pruner { stop, task }
    }

    /// Ends the task, letting a prune in progress finish.
    pub async fn stop(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }
}
