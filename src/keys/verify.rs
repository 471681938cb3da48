//! Key verification: from a key's hash to its owner, through a bounded
//! in-memory cache.
//!
//! - Every lookup result for an existing key (usable or not) is cached by
//!   hash; usability (active, owner active, not expired) is decided at each
//!   use, so expiry needs no invalidation.
//! - Every write that could make a key unusable calls a `forget_*` hook
//!   before the API answers; the hook evicts locally at once and publishes
//!   the change to other instances (PostgreSQL `NOTIFY`, see
//!   [`super::invalidation`]).
//! - A generation counter stops a lookup that raced with an invalidation
//!   from re-inserting what it read before the change.
//! - Unknown hashes go to a small, short-lived negative cache, cleared when
//!   a key is created; misses that reach the database are bounded by a
//!   semaphore so a flood of unknown keys cannot exhaust the pool, and they
//!   can never evict cached valid keys.
//! - Entries older than the cache TTL are looked up again: the safety net
//!   if a notification is ever lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;

use crate::auth::AuthUser;
use crate::config::Config;
use crate::db::{self, DbPool};
use crate::error::AppError;
use crate::flows::cache::FlowCache;
use crate::keys::invalidation::{Invalidation, Publisher};
use crate::keys::store;
use crate::keys::token::{DigestMap, KeyDigest};
use crate::keys::usage::{KeyCounters, UsageRecorder};

#[derive(Debug, Clone)]
pub struct VerifiedKey {
    pub key_id: String,
    pub owner: AuthUser,
    /// This key's pending usage counts (shared with the usage recorder).
    pub usage: Arc<KeyCounters>,
    /// The one flow this key may run, if it is bound to one.
    pub flow_id: Option<String>,
    key_active: bool,
    owner_active: bool,
    expires_at: Option<NaiveDateTime>,
}

impl VerifiedKey {
    pub fn is_usable_at(&self, now: NaiveDateTime) -> bool {
        self.key_active && self.owner_active && self.expires_at.is_none_or(|at| at > now)
    }
}

impl VerifiedKey {
    fn new(row: store::KeyWithOwner, usage: Arc<KeyCounters>) -> Self {
        VerifiedKey {
            usage,
            key_id: row.key_id,
            owner: row.owner,
            flow_id: row.flow_id,
            key_active: row.key_active,
            owner_active: row.owner_active,
            expires_at: row.expires_at,
        }
    }
}

struct Cached {
    key: Arc<VerifiedKey>,
    verified_at: Instant,
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

pub struct KeyVerifier {
    pool: DbPool,
    settings: CacheSettings,
    known: RwLock<DigestMap<Cached>>,
    unknown: Mutex<DigestMap<Instant>>,
    usage: Arc<UsageRecorder>,
    /// Bumped by every invalidation; see the module doc.
    generation: AtomicU64,
    /// The same for the negative cache, bumped by key creations.
    negative_generation: AtomicU64,
    misses: tokio::sync::Semaphore,
    publisher: Publisher,
    /// Lookups that reached the database (for tests and metrics).
    database_lookups: AtomicU64,
    /// The gateway's flow cache, invalidated through the same path.
    flows: Arc<FlowCache>,
}

impl KeyVerifier {
    pub fn new(
        pool: DbPool,
        settings: CacheSettings,
        publisher: Publisher,
        usage: Arc<UsageRecorder>,
        flows: Arc<FlowCache>,
    ) -> Self {
        Self {
            pool,
            misses: tokio::sync::Semaphore::new(settings.max_concurrent_misses),
            settings,
            known: RwLock::new(DigestMap::default()),
            unknown: Mutex::new(DigestMap::default()),
            usage,
            generation: AtomicU64::new(0),
            negative_generation: AtomicU64::new(0),
            publisher,
            database_lookups: AtomicU64::new(0),
            flows,
        }
    }

    /// The key with this hash and its owner, usable or not; `None` when no
    /// such key exists.
    pub async fn verify(&self, digest: KeyDigest) -> Result<Option<Arc<VerifiedKey>>, AppError> {
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
        let generation = (
            self.generation.load(Ordering::SeqCst),
            self.negative_generation.load(Ordering::SeqCst),
        );
        self.database_lookups.fetch_add(1, Ordering::Relaxed);
        let hash = digest.to_hash();
        let found = db::run(&self.pool, move |conn| {
            store::find_by_hash(conn, hash.as_str()).map_err(AppError::from)
        })
        .await?
        .map(|row| {
            let usage = self.usage.counters(&row.key_id);
            Arc::new(VerifiedKey::new(row, usage))
        });
        self.remember(digest, found.clone(), generation);
        Ok(found)
    }

    /// `Some(answer)` on a fresh cache hit (negative hits answer `None`).
    fn cached(&self, digest: &KeyDigest) -> Option<Option<Arc<VerifiedKey>>> {
        let now = Instant::now();
        {
            let known = self.known.read().unwrap_or_else(|p| p.into_inner());
            if let Some(entry) = known.get(digest) {
                if now.duration_since(entry.verified_at) < self.settings.ttl {
                    return Some(Some(entry.key.clone()));
                }
            }
        }
        let unknown = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
        match unknown.get(digest) {
            Some(at) if now.duration_since(*at) < self.settings.negative_ttl => Some(None),
            _ => None,
        }
    }

    fn remember(&self, digest: KeyDigest, found: Option<Arc<VerifiedKey>>, generation: (u64, u64)) {
        let now = Instant::now();
        match found {
            Some(key) => {
                let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
                // Checked under the lock that invalidations also take.
                if self.generation.load(Ordering::SeqCst) != generation.0 {
                    return;
                }
                if known.len() >= self.settings.capacity && !known.contains_key(&digest) {
                    evict_one(&mut known, self.settings.ttl, now);
                }
                known.insert(
                    digest,
                    Cached {
                        key,
                        verified_at: now,
                    },
                );
            }
            None => {
                let mut unknown = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
                if self.negative_generation.load(Ordering::SeqCst) != generation.1 {
                    return;
                }
                if unknown.len() >= self.settings.negative_capacity {
                    let ttl = self.settings.negative_ttl;
                    unknown.retain(|_, at| now.duration_since(*at) < ttl);
                    if unknown.len() >= self.settings.negative_capacity {
                        return;
                    }
                }
                unknown.insert(digest, now);
            }
        }
    }

    /// Applies an invalidation to this instance's caches only.
    pub fn apply(&self, invalidation: &Invalidation) {
        if matches!(invalidation, Invalidation::KeyCreated | Invalidation::All) {
            let mut unknown = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
            self.negative_generation.fetch_add(1, Ordering::SeqCst);
            unknown.clear();
        }
        match invalidation {
            Invalidation::Flows(user_id) | Invalidation::User(user_id) => {
                self.flows.forget_owner(user_id)
            }
            Invalidation::All => self.flows.clear(),
            Invalidation::Key(_) | Invalidation::KeyCreated => {}
        }
        // A new key cannot make a cached key stale, nor a flow change.
        if matches!(
            invalidation,
            Invalidation::KeyCreated | Invalidation::Flows(_)
        ) {
            return;
        }
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        match invalidation {
            Invalidation::Key(key_id) => known.retain(|_, c| c.key.key_id != *key_id),
            Invalidation::User(user_id) => known.retain(|_, c| c.key.owner.id != *user_id),
            Invalidation::KeyCreated | Invalidation::Flows(_) => {}
            Invalidation::All => known.clear(),
        }
    }

    fn invalidate(&self, invalidation: Invalidation) {
        self.apply(&invalidation);
        self.publisher.publish(invalidation);
    }

    /// A key was revoked, deactivated or changed.
    pub fn forget_key(&self, key_id: &str) {
        self.invalidate(Invalidation::Key(key_id.to_string()));
    }

    /// A user was deleted, deactivated or had their rights changed.
    pub fn forget_user(&self, user_id: &str) {
        self.invalidate(Invalidation::User(user_id.to_string()));
    }

    /// A flow of this user was created, changed or deleted.
    pub fn forget_flows(&self, user_id: &str) {
        self.invalidate(Invalidation::Flows(user_id.to_string()));
    }

    /// The gateway's flow cache.
    pub fn flows(&self) -> &FlowCache {
        &self.flows
    }

    /// A key was created: a cached "unknown" must not hide it.
    pub fn key_created(&self) {
        self.invalidate(Invalidation::KeyCreated);
    }

    /// Lookups that reached the database since start.
    pub fn database_lookups(&self) -> u64 {
        self.database_lookups.load(Ordering::Relaxed)
    }

    /// Number of cached existing keys (for tests and metrics).
    pub fn cached_keys(&self) -> usize {
        self.known.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Makes room for one entry: an expired one if any, else an arbitrary one.
fn evict_one(known: &mut DigestMap<Cached>, ttl: Duration, now: Instant) {
    let victim = known
        .iter()
        .find(|(_, c)| now.duration_since(c.verified_at) >= ttl)
        .or_else(|| known.iter().next())
        .map(|(digest, _)| *digest);
    if let Some(digest) = victim {
        known.remove(&digest);
    }
}
