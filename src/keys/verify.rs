//! Key verification: from a key's digest to its owner, through bounded
//! in-memory caches kept true by the invalidation bus.
//!
//! - Every lookup result for an existing key (usable or not) is cached by
//!   digest; usability (active, owner active, not expired) is decided at
//!   each use, so expiry needs no invalidation.
//! - Every write that could make a key unusable publishes an event on the
//!   bus before the API answers ([`crate::bus`]); this verifier subscribes
//!   and evicts what the event names, here and on every other instance.
//! - Unknown digests go to a separate, short-lived negative cache, cleared
//!   when a key is created; misses that reach the database are bounded by a
//!   semaphore so a flood of unknown keys cannot exhaust the pool, and
//!   they can never evict cached valid keys.

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDateTime;

use crate::bus::{Event, Subscriber};
use crate::cache::GuardedCache;
use crate::config::Config;
use crate::db::{self, DbPool};
use crate::error::AppError;
use crate::identity::{reject, AuthUser, Credential, Principal, INVALID_KEY};
use crate::keys::store;
use crate::keys::usage::{KeyCounters, UsageRecorder};
use crate::token::{DigestHasherBuilder, PlainKey, TokenDigest};

#[derive(Debug, Clone)]
pub struct VerifiedKey {
    pub key_id: String,
    pub owner: Arc<AuthUser>,
    /// This key's pending usage counts (shared with the usage recorder).
    pub usage: Arc<KeyCounters>,
    /// The one flow this key may run, if it is bound to one.
    pub flow_id: Option<String>,
    key_active: bool,
    expires_at: Option<NaiveDateTime>,
}

impl VerifiedKey {
    pub fn is_usable_at(&self, now: NaiveDateTime) -> bool {
        self.key_active && self.owner.is_active && self.expires_at.is_none_or(|at| at > now)
    }

    fn new(row: store::KeyWithOwner, usage: Arc<KeyCounters>) -> Self {
        VerifiedKey {
            usage,
            key_id: row.key_id,
            owner: Arc::new(row.owner),
            flow_id: row.flow_id,
            key_active: row.key_active,
            expires_at: row.expires_at,
        }
    }
}

/// Cache sizes and lifetimes, from `KEYGATE_KEY_CACHE_*`.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    pub capacity: usize,
    pub ttl: Duration,
    pub negative_capacity: usize,
    pub negative_ttl: Duration,
    pub max_concurrent_misses: usize,
}

impl CacheSettings {
    pub fn from_config(config: &Config) -> Self {
        CacheSettings {
            capacity: config.key_cache_size,
            ttl: config.key_cache_ttl,
            negative_capacity: (config.key_cache_size / 10).max(1024),
            negative_ttl: config.negative_cache_ttl,
            max_concurrent_misses: (config.pool_size as usize / 2).max(1),
        }
    }
}

type DigestCache<V> = GuardedCache<TokenDigest, V, DigestHasherBuilder>;

pub struct KeyVerifier {
    pool: DbPool,
    known: DigestCache<Arc<VerifiedKey>>,
    unknown: DigestCache<()>,
    usage: Arc<UsageRecorder>,
    misses: tokio::sync::Semaphore,
}

impl KeyVerifier {
    pub fn new(pool: DbPool, settings: CacheSettings, usage: Arc<UsageRecorder>) -> Self {
        Self {
            pool,
            misses: tokio::sync::Semaphore::new(settings.max_concurrent_misses),
            known: GuardedCache::with_hasher(
                settings.capacity,
                settings.ttl,
                DigestHasherBuilder::default(),
            ),
            unknown: GuardedCache::with_hasher(
                settings.negative_capacity,
                settings.negative_ttl,
                DigestHasherBuilder::default(),
            ),
            usage,
        }
    }

    /// The key with this digest and its owner, usable or not; `None` when
    /// no such key exists.
    pub async fn verify(&self, digest: TokenDigest) -> Result<Option<Arc<VerifiedKey>>, AppError> {
        if let Some(hit) = self.cached(&digest) {
            return Ok(hit);
        }
        let _permit = self
            .misses
            .acquire()
            .await
            .map_err(|_| AppError::unavailable("key verification is shutting down"))?;
        // Another request may have filled the cache while this one waited.
        if let Some(hit) = self.cached(&digest) {
            return Ok(hit);
        }
        let known_generation = self.known.begin_lookup();
        let unknown_generation = self.unknown.begin_lookup();
        let hash = digest.to_hash();
        let found = db::run(&self.pool, move |conn| {
            store::find_by_hash(conn, hash.as_str())
        })
        .await?
        .map(|row| {
            let usage = self.usage.counters(&row.key_id);
            Arc::new(VerifiedKey::new(row, usage))
        });
        match &found {
            Some(key) => self.known.insert(digest, key.clone(), known_generation),
            None => self.unknown.insert(digest, (), unknown_generation),
        }
        Ok(found)
    }

    /// `Some(answer)` on a fresh cache hit (negative hits answer `None`).
    fn cached(&self, digest: &TokenDigest) -> Option<Option<Arc<VerifiedKey>>> {
        if let Some(key) = self.known.get(digest) {
            return Some(Some(key));
        }
        self.unknown.get(digest).map(|()| None)
    }

    /// Lookups that reached the database since start.
    pub fn database_lookups(&self) -> u64 {
        self.known.lookups()
    }

    /// Number of cached existing keys (for tests and metrics).
    pub fn cached_keys(&self) -> usize {
        self.known.len()
    }
}

impl Subscriber for KeyVerifier {
    fn on_event(&self, event: &Event) {
        match event {
            Event::KeyChanged(key_id) => self.known.invalidate(|_, key| key.key_id == *key_id),
            Event::UserChanged(user_id) => self.known.invalidate(|_, key| key.owner.id == *user_id),
            Event::KeyCreated => self.unknown.clear(),
            Event::All => {
                self.known.clear();
                self.unknown.clear();
            }
            Event::FlowsChanged(_) | Event::SecretsChanged(_) | Event::SecretRotated => {}
        }
    }
}

/// The principal an `sk-` key stands for, or the one 401 every bad key
/// gets (malformed, unknown, revoked, expired, inactive, inactive owner).
/// A malformed key costs no database work.
pub async fn authenticate(verifier: &KeyVerifier, text: &str) -> Result<Principal, AppError> {
    if !PlainKey::is_well_formed(text) {
        return Err(reject("malformed key", AppError::unauthorized(INVALID_KEY)));
    }
    let now = db::now();
    match verifier.verify(TokenDigest::of(text)).await? {
        Some(key) if key.is_usable_at(now) => {
            key.usage.record(now);
            Ok(Principal {
                user: key.owner.clone(),
                credential: Credential::ApiKey {
                    key_id: key.key_id.clone(),
                    flow_id: key.flow_id.clone(),
                },
            })
        }
        Some(_) => Err(reject("unusable key", AppError::unauthorized(INVALID_KEY))),
        None => Err(reject("unknown key", AppError::unauthorized(INVALID_KEY))),
    }
}
