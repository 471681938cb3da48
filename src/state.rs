//! What every handler shares: settings, the pool, the key verifier and the
//! usage counters.

use std::sync::Arc;

use crate::config::Config;
use crate::db::DbPool;
use crate::keys::usage::UsageRecorder;
use crate::keys::verify::KeyVerifier;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: DbPool,
    pub keys: Arc<KeyVerifier>,
    pub usage: Arc<UsageRecorder>,
}

impl AppState {
    pub fn new(config: Config, pool: DbPool) -> Self {
        AppState {
            keys: Arc::new(KeyVerifier::new(pool.clone())),
            usage: Arc::new(UsageRecorder::new(pool.clone())),
            config: Arc::new(config),
            pool,
        }
    }
}
