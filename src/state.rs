//! What every handler shares: settings, the pool, the key verifier, the
//! usage counters, the box that encrypts stored secrets and the outbound
//! HTTP client.

use std::sync::Arc;

use crate::config::Config;
use crate::crypto::SecretBox;
use crate::db::DbPool;
use crate::keys::usage::UsageRecorder;
use crate::keys::verify::KeyVerifier;
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
}

impl AppState {
    pub fn new(config: Config, pool: DbPool, secrets: SecretBox, outbound: Outbound) -> Self {
        AppState {
            secrets: Arc::new(secrets),
            outbound: Arc::new(outbound),
            keys: Arc::new(KeyVerifier::new(pool.clone())),
            usage: Arc::new(UsageRecorder::new(pool.clone())),
            config: Arc::new(config),
            pool,
        }
    }
}
