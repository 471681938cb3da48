//! What every handler shares: settings, the pool, the key verifier, the
//! usage counters, the box that encrypts stored secrets and the outbound
//! HTTP client.

use std::sync::Arc;

use crate::config::Config;
use crate::crypto::SecretBox;
use crate::db::{DatabaseUrl, DbPool};
use crate::flows::cache::FlowCache;
use crate::keys::invalidation::{self, Listener, Publisher};
use crate::keys::usage::UsageRecorder;
use crate::keys::verify::{CacheSettings, KeyVerifier};
use crate::outbound::Outbound;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: DbPool,
    pub keys: Arc<KeyVerifier>,
    pub usage: Arc<UsageRecorder>,
    /// Encrypts and decrypts stored secrets (see `crypto`).
    pub secrets: Arc<SecretBox>,
    /// The outbound HTTP client with its SSRF policy (see `outbound`).
    pub outbound: Arc<Outbound>,
    /// The PostgreSQL invalidation thread (none on SQLite).
    invalidation: Option<Arc<Listener>>,
}

impl AppState {
    pub fn new(config: Config, pool: DbPool, secrets: SecretBox, outbound: Outbound) -> Self {
        let settings = CacheSettings::from_config(&config);
        let usage = Arc::new(UsageRecorder::new(pool.clone()));
        let flows = Arc::new(FlowCache::new(config.key_cache_size, config.key_cache_ttl));
        let (keys, invalidation) = match &config.database_url {
            DatabaseUrl::Postgres(url) => {
                let (publisher, outgoing) = invalidation::queue();
                let keys = Arc::new(KeyVerifier::new(
                    pool.clone(),
                    settings,
                    publisher,
                    usage.clone(),
                    flows.clone(),
                ));
                let listener = Listener::spawn(
                    url.clone(),
                    Arc::downgrade(&keys),
                    outgoing,
                    config.notify_poll,
                );
                (keys, Some(Arc::new(listener)))
            }
            DatabaseUrl::Sqlite(_) => (
                Arc::new(KeyVerifier::new(
                    pool.clone(),
                    settings,
                    Publisher::default(),
                    usage.clone(),
                    flows.clone(),
                )),
                None,
            ),
        };
        AppState {
            keys,
            usage,
            secrets: Arc::new(secrets),
            outbound: Arc::new(outbound),
            config: Arc::new(config),
            pool,
            invalidation,
        }
    }

    /// Stops background work after the server has stopped.
    pub fn stop_background(&self) {
        if let Some(listener) = &self.invalidation {
            listener.stop();
        }
    }
}
