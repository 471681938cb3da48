//! What every handler shares from the core: settings, the pool, the box
//! that encrypts stored secrets, the outbound HTTP client, the
//! invalidation bus, the metrics and the shutdown flag. Domain services (the key verifier, the flow cache, the
//! usage counters) are app data of their own, built by `server` on top of
//! this, so the core knows no domain.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::bus::{Bus, Event};
use crate::config::Config;
use crate::crypto::SecretBox;
use crate::db::{self, DatabaseUrl, DbConnection, DbPool};
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::outbound::Outbound;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: DbPool,
    /// Encrypts and decrypts stored secrets (see `crypto`).
    pub secrets: Arc<SecretBox>,
    /// The outbound HTTP client with its SSRF policy (see `outbound`).
    pub outbound: Arc<Outbound>,
    /// Where writes announce what they changed (see `bus`).
    pub bus: Arc<Bus>,
    /// This server's Prometheus metrics (see `metrics`).
    pub metrics: Arc<Metrics>,
    /// Set once a graceful shutdown has begun: `/ready` answers 503.
    pub shutting_down: Arc<AtomicBool>,
}

impl AppState {
    pub fn new(
        config: Config,
        pool: DbPool,
        secrets: SecretBox,
        outbound: Outbound,
        metrics: Arc<Metrics>,
    ) -> Self {
        let bus = match &config.database_url {
            DatabaseUrl::Postgres(url) => Bus::postgres_measured(
                url.clone(),
                config.notify_poll,
                Some(metrics.invalidation_lag()),
            ),
            DatabaseUrl::Sqlite(_) => Bus::local(),
        };
        AppState {
            metrics,
            shutting_down: Arc::new(AtomicBool::new(false)),
            secrets: Arc::new(secrets),
            outbound: Arc::new(outbound),
            bus: Arc::new(bus),
            config: Arc::new(config),
            pool,
        }
    }

    /// Deletes one of the caller's rows the way every such route does:
    /// `delete` (a store's `delete_for_user`) runs off the async workers;
    /// when it removed nothing the answer is 404 `not_found`, otherwise
    /// `event` announces the change.
    pub async fn delete_or_404<F>(
        &self,
        delete: F,
        not_found: &'static str,
        event: Event,
    ) -> Result<(), AppError>
    where
        F: FnOnce(&mut DbConnection) -> Result<bool, AppError> + Send + 'static,
    {
        if !db::run(&self.pool, delete).await? {
            return Err(AppError::not_found(not_found));
        }
        self.bus.publish(event);
        Ok(())
    }

    /// Stops background work after the server has stopped.
    pub fn stop_background(&self) {
        self.bus.stop();
    }
}
