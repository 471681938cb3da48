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
//!   when a key is created, so they can never evict cached valid keys.
//! - A key the filter ([`crate::keys::filter`]) knows is not stored is
//!   refused from memory, as cheaply as a cached valid key.
//! - Other misses are answered in batches by a few lookup workers (half the
//!   pool): one query for every miss queued meanwhile, so a flood of
//!   unknown keys costs a handful of queries at a time and cannot exhaust
//!   the pool (see [`KeyVerifier::verify`]).

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDateTime;

use crate::bus::{Event, Subscriber};
use crate::cache::GuardedCache;
use crate::config::Config;
use crate::db::{self, DbPool};
use crate::error::AppError;
use crate::identity::{reject, AuthUser, Credential, KeyPolicy, Principal, INVALID_KEY};
use crate::keys::filter::KeyFilter;
use crate::keys::limits::{KeyWindow, RateLimit, RateLimiter, Verdict};
use crate::keys::store;
use crate::keys::usage::{KeyCounters, UsageRecorder};
use crate::metrics::{CacheCounters, KeyOutcome, KeyOutcomes, Metrics};
use crate::token::{DigestHasherBuilder, PlainKey, TokenDigest};
use tokio::sync::oneshot;

#[derive(Debug, Clone)]
pub struct VerifiedKey {
    pub key_id: String,
    pub owner: Arc<AuthUser>,
    /// This key's pending usage counts (shared with the usage recorder).
    pub usage: Arc<KeyCounters>,
    /// The one flow this key may run, if it is bound to one.
    pub flow_id: Option<String>,
    /// Scopes and allowed addresses, checked per request from here.
    pub policy: Arc<KeyPolicy>,
    /// The key's rate limit and its window on this instance.
    pub limit: Option<KeyLimit>,
    key_active: bool,
    expires_at: Option<NaiveDateTime>,
}

impl VerifiedKey {
    pub fn is_usable_at(&self, now: NaiveDateTime) -> bool {
        self.key_active && self.owner.is_active && self.expires_at.is_none_or(|at| at > now)
    }

    /// Why a key that is not usable at `now` is not: deactivated (or its
    /// owner is) before expired.
    fn unusable_outcome(&self, now: NaiveDateTime) -> KeyOutcome {
        if !self.key_active || !self.owner.is_active {
            KeyOutcome::Inactive
        } else if self.expires_at.is_some_and(|at| at <= now) {
            KeyOutcome::Expired
        } else {
            KeyOutcome::Valid
        }
    }

    fn new(row: store::KeyWithOwner, usage: Arc<KeyCounters>, limiter: &Arc<RateLimiter>) -> Self {
        let limit =
            RateLimit::from_stored(row.rate_limit_requests, row.rate_limit_seconds).map(|rule| {
                KeyLimit {
                    rule,
                    window: limiter.window(&row.key_id),
                    limiter: limiter.clone(),
                }
            });
        let policy = Arc::new(KeyPolicy {
            rate_limit: limit
                .as_ref()
                .map(|l| (l.rule.requests, l.rule.per_seconds)),
            ..KeyPolicy::from_stored(row.scopes.as_deref(), row.allowed_ips.as_deref())
        });
        VerifiedKey {
            usage,
            limit,
            policy,
            key_id: row.key_id,
            owner: Arc::new(row.owner),
            flow_id: row.flow_id,
            key_active: row.key_active,
            expires_at: row.expires_at,
        }
    }
}

/// A limited key's rule and its window on this instance.
#[derive(Clone)]
pub struct KeyLimit {
    pub rule: RateLimit,
    window: Arc<KeyWindow>,
    limiter: Arc<RateLimiter>,
}

impl std::fmt::Debug for KeyLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyLimit")
            .field("rule", &self.rule)
            .finish()
    }
}

impl KeyLimit {
    /// Counts a request now if the window has room.
    pub fn admit(&self) -> Verdict {
        self.limiter
            .admit(&self.window, self.rule, chrono::Utc::now().timestamp())
    }

    /// The window's state now, counting nothing.
    pub fn peek(&self) -> Verdict {
        self.limiter
            .peek(&self.window, self.rule, chrono::Utc::now().timestamp())
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

/// The most misses one database query answers.
const MAX_BATCH: usize = 512;

type LookupReply = Result<Option<store::KeyWithOwner>, AppError>;

/// A verification miss waiting for the lookup workers.
struct Miss {
    digest: TokenDigest,
    reply: oneshot::Sender<LookupReply>,
}

pub struct KeyVerifier {
    known: DigestCache<Arc<VerifiedKey>>,
    unknown: DigestCache<()>,
    /// Digests of cached keys a `KeyChanged` or `UserChanged` evicted: if
    /// such a key is then not found, it was revoked (revocation deletes
    /// the row), which the metrics count apart from made-up keys. Only a
    /// counting aid: the answer is the same 401 either way.
    evicted:
        quick_cache::sync::Cache<TokenDigest, (), quick_cache::UnitWeighter, DigestHasherBuilder>,
    usage: Arc<UsageRecorder>,
    limiter: Arc<RateLimiter>,
    filter: Arc<KeyFilter>,
    /// To the lookup workers; they stop when the verifier is dropped.
    misses: mpsc::Sender<Miss>,
    /// The filter's answers as cache hits (ruled out) and misses.
    filter_counters: CacheCounters,
    outcomes: KeyOutcomes,
}

impl KeyVerifier {
    /// `current`: the bus's flag (`Bus::current`); the caches are bypassed
    /// while this instance may be missing invalidations.
    pub fn new(
        pool: DbPool,
        settings: CacheSettings,
        usage: Arc<UsageRecorder>,
        limiter: Arc<RateLimiter>,
        filter: Arc<KeyFilter>,
        current: Arc<AtomicBool>,
        metrics: &Metrics,
    ) -> Self {
        let (misses, queue) = mpsc::channel();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..settings.max_concurrent_misses {
            let (pool, queue) = (pool.clone(), queue.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("keygate-key-lookup-{n}"))
                .spawn(move || lookup_worker(&pool, &queue));
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start a key lookup worker");
            }
        }
        Self {
            misses,
            known: GuardedCache::with_hasher(
                settings.capacity,
                settings.ttl,
                DigestHasherBuilder::default(),
            )
            .gated(current.clone())
            .counted(metrics.cache("keys")),
            unknown: GuardedCache::with_hasher(
                settings.negative_capacity,
                settings.negative_ttl,
                DigestHasherBuilder::default(),
            )
            .gated(current)
            .counted(metrics.cache("unknown_keys")),
            evicted: quick_cache::sync::Cache::with(
                EVICTED_DIGESTS,
                EVICTED_DIGESTS as u64,
                quick_cache::UnitWeighter,
                DigestHasherBuilder::default(),
                Default::default(),
            ),
            usage,
            limiter,
            filter,
            filter_counters: metrics.cache("key_filter"),
            outcomes: metrics.keys(),
        }
    }

    /// The key with this digest and its owner, usable or not; `None` when
    /// no such key exists.
    ///
    /// A miss (a new key, or a flood of unknown ones) joins the misses in
    /// flight: a few workers each answer every miss queued meanwhile with
    /// one query, so a flood costs a handful of queries at a time, never a
    /// query or a pooled connection per request, and cannot push cached
    /// valid keys out (unknown digests have their own cache). Every miss
    /// reaches the database, so a key created a moment ago on another
    /// instance is always found.
    pub async fn verify(&self, digest: TokenDigest) -> Result<Option<Arc<VerifiedKey>>, AppError> {
        if let Some(hit) = self.cached(&digest) {
            return Ok(hit);
        }
        self.look_up(digest).await
    }

    /// The database's answer for a digest the caches could not answer for
    /// (see [`KeyVerifier::verify`]), cached for the next request.
    async fn look_up(&self, digest: TokenDigest) -> Result<Option<Arc<VerifiedKey>>, AppError> {
        let known_generation = self.known.begin_lookup();
        let unknown_generation = self.unknown.begin_lookup();
        let (reply, answer) = oneshot::channel();
        self.misses
            .send(Miss { digest, reply })
            .map_err(|_| AppError::unavailable("key verification is shutting down"))?;
        let found = answer
            .await
            .map_err(|_| AppError::unavailable("key verification is shutting down"))??
            .map(|row| {
                let usage = self.usage.counters(&row.key_id);
                Arc::new(VerifiedKey::new(row, usage, &self.limiter))
            });
        match &found {
            Some(key) => self.known.insert(digest, key.clone(), known_generation),
            None => self.unknown.insert(digest, (), unknown_generation),
        }
        Ok(found)
    }

    /// `Some(answer)` on a fresh cache hit, or when the filter rules the
    /// key out (negative answers are `None`).
    fn cached(&self, digest: &TokenDigest) -> Option<Option<Arc<VerifiedKey>>> {
        if let Some(key) = self.known.get(digest) {
            return Some(Some(key));
        }
        let ruled_out = self.filter.rules_out(digest);
        self.filter_counters.record(ruled_out);
        if ruled_out {
            return Some(None);
        }
        self.unknown.get(digest).map(|()| None)
    }

    /// The filter of stored keys (for tests and metrics).
    pub fn filter(&self) -> &KeyFilter {
        &self.filter
    }

    /// Misses that reached the database since start.
    pub fn database_lookups(&self) -> u64 {
        self.known.lookups()
    }

    /// Number of cached existing keys (for tests and metrics).
    pub fn cached_keys(&self) -> usize {
        self.known.len()
    }

    /// The key verification counters (`keygate_key_verifications_total`):
    /// the verdicts on the key itself are counted here; the `auth`
    /// middleware counts `valid` and the refusals of a valid key
    /// (address, scope, rate limit) once it has decided.
    pub fn outcomes(&self) -> &KeyOutcomes {
        &self.outcomes
    }
}

/// Takes the first miss queued and every one behind it (up to
/// [`MAX_BATCH`]), answers them with one query, and again, until the
/// verifier is dropped.
fn lookup_worker(pool: &DbPool, queue: &Mutex<mpsc::Receiver<Miss>>) {
    loop {
        let batch = {
            let queue = queue.lock().unwrap_or_else(|p| p.into_inner());
            let Ok(first) = queue.recv() else { return };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(miss) => batch.push(miss),
                    Err(_) => break,
                }
            }
            batch
        };
        let hashes: Vec<String> = batch
            .iter()
            .map(|miss| miss.digest.to_hash().as_str().to_string())
            .collect();
        let lookup = hashes.clone();
        match db::run_blocking(pool, move |conn| store::find_by_hashes(conn, &lookup)) {
            Ok(rows) => {
                let found: HashMap<String, store::KeyWithOwner> = rows.into_iter().collect();
                for (miss, hash) in batch.into_iter().zip(&hashes) {
                    let _ = miss.reply.send(Ok(found.get(hash).cloned()));
                }
            }
            Err(error) => {
                for miss in batch {
                    let _ = miss.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Evicted key digests remembered for the `revoked` count.
const EVICTED_DIGESTS: usize = 10_000;

impl KeyVerifier {
    fn remember_evicted(&self, digest: &TokenDigest, stale: bool) -> bool {
        if stale {
            self.evicted.insert(*digest, ());
        }
        stale
    }

    /// How a key that was not found is counted.
    fn missing_outcome(&self, digest: &TokenDigest) -> KeyOutcome {
        if self.evicted.get(digest).is_some() {
            KeyOutcome::Revoked
        } else {
            KeyOutcome::Unknown
        }
    }
}

impl Subscriber for KeyVerifier {
    fn on_event(&self, event: &Event) {
        match event {
            Event::KeyChanged(key_id) => self
                .known
                .invalidate(|digest, key| self.remember_evicted(digest, key.key_id == *key_id)),
            Event::UserChanged(user_id) => self
                .known
                .invalidate(|digest, key| self.remember_evicted(digest, key.owner.id == *user_id)),
            Event::KeyCreated(_) => self.unknown.clear(),
            Event::All => {
                self.known.clear();
                self.unknown.clear();
            }
            Event::FlowsChanged(_) | Event::SecretsChanged(_) | Event::SecretRotated => {}
        }
    }
}

/// A request's usable key: the principal it stands for and the cached key
/// itself (its limit and its usage counters).
#[derive(Debug, Clone)]
pub struct KeyCaller {
    pub principal: Principal,
    pub key: Arc<VerifiedKey>,
    /// When the key was judged usable: the time its use is counted at (one
    /// clock read per request).
    pub at: NaiveDateTime,
}

/// What the caches alone say about a key: the first half of verifying
/// one (from key text to a `Principal`, or the one 401 every bad key gets:
/// malformed, unknown, revoked, expired, inactive, inactive owner).
pub enum CacheAnswer {
    /// Answered from memory: a usable key, or the one 401.
    Answered(Result<KeyCaller, AppError>),
    /// Only the database can tell ([`authenticate_stored`] asks it).
    Ask(TokenDigest),
}

/// A key verified from the caches alone, so the caller decides whether a
/// lookup may follow (an address throttled for sending invalid keys gets
/// few). A malformed key costs no database work. Each answer is counted
/// once in the metrics.
pub fn authenticate_cached(verifier: &KeyVerifier, text: &str) -> CacheAnswer {
    if !PlainKey::is_well_formed(text) {
        verifier.outcomes.record(KeyOutcome::Malformed);
        return CacheAnswer::Answered(Err(reject(
            "malformed key",
            AppError::unauthorized(INVALID_KEY),
        )));
    }
    let digest = TokenDigest::of(text);
    match verifier.cached(&digest) {
        Some(found) => CacheAnswer::Answered(judge(verifier, &digest, found)),
        None => CacheAnswer::Ask(digest),
    }
}

/// The second half: a key the caches had no answer for
/// ([`CacheAnswer::Ask`]), verified with one lookup past the caches.
pub async fn authenticate_stored(
    verifier: &KeyVerifier,
    digest: TokenDigest,
) -> Result<KeyCaller, AppError> {
    judge(verifier, &digest, verifier.look_up(digest).await?)
}

/// The verdict on what a lookup found. A usable key is not counted here:
/// the middleware may still refuse it.
fn judge(
    verifier: &KeyVerifier,
    digest: &TokenDigest,
    found: Option<Arc<VerifiedKey>>,
) -> Result<KeyCaller, AppError> {
    let now = db::now();
    match found {
        Some(key) if key.is_usable_at(now) => Ok(KeyCaller {
            principal: Principal {
                user: key.owner.clone(),
                credential: Credential::ApiKey {
                    key_id: key.key_id.clone(),
                    flow_id: key.flow_id.clone(),
                    policy: key.policy.clone(),
                },
            },
            key,
            at: now,
        }),
        Some(key) => {
            verifier.outcomes.record(key.unusable_outcome(now));
            Err(reject("unusable key", AppError::unauthorized(INVALID_KEY)))
        }
        None => {
            verifier.outcomes.record(verifier.missing_outcome(digest));
            Err(reject("unknown key", AppError::unauthorized(INVALID_KEY)))
        }
    }
}
