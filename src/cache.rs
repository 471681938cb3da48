//! A bounded in-memory cache (quick_cache) with the one guard every cache
//! of keygate needs: a lookup that raced with an invalidation must not put
//! back what it read before the change.
//!
//! A reader takes a [`Generation`] before going to the database and hands
//! it to [`GuardedCache::insert`]; an invalidation bumps the generation, so
//! the stale insert is dropped. The check and the insert happen under the
//! same small lock that invalidations take, so nothing slips between them;
//! hits never take it. Entries older than the TTL count as missing (the
//! safety net should an invalidation ever be lost).

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, UnitWeighter};

use crate::metrics::CacheCounters;

/// Taken before a database lookup whose result is then inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation(u64);

#[derive(Clone)]
struct Entry<V> {
    value: V,
    at: Instant,
}

pub struct GuardedCache<K, V, S = DefaultHashBuilder> {
    entries: Cache<K, Entry<V>, UnitWeighter, S>,
    generation: AtomicU64,
    /// Held by inserts (to check the generation) and invalidations.
    writes: Mutex<()>,
    ttl: Duration,
    lookups: AtomicU64,
    /// While false the cache answers nothing and keeps nothing (see
    /// [`GuardedCache::gated`]).
    gate: Option<Arc<AtomicBool>>,
    /// Hits and misses, for the metrics (see [`GuardedCache::counted`]).
    counters: Option<CacheCounters>,
}

impl<K, V> GuardedCache<K, V>
where
    K: Eq + Hash + Clone,
    V: Clone,
{
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self::with_hasher(capacity, ttl, DefaultHashBuilder::default())
    }
}

impl<K, V, S> GuardedCache<K, V, S>
where
    K: Eq + Hash + Clone,
    V: Clone,
    S: BuildHasher + Clone,
{
    pub fn with_hasher(capacity: usize, ttl: Duration, hasher: S) -> Self {
        let capacity = capacity.max(1);
        GuardedCache {
            entries: Cache::with(
                capacity,
                capacity as u64,
                UnitWeighter,
                hasher,
                Default::default(),
            ),
            generation: AtomicU64::new(0),
            writes: Mutex::new(()),
            ttl,
            lookups: AtomicU64::new(0),
            gate: None,
            counters: None,
        }
    }

    /// Counts every [`GuardedCache::get`] as a hit or a miss.
    pub fn counted(mut self, counters: CacheCounters) -> Self {
        self.counters = Some(counters);
        self
    }

    /// Serves and keeps entries only while `open` holds: the bus's
    /// "this instance hears every change" flag, so a cache whose
    /// invalidations may be missed is bypassed rather than trusted.
    pub fn gated(mut self, open: Arc<AtomicBool>) -> Self {
        self.gate = Some(open);
        self
    }

    fn is_open(&self) -> bool {
        self.gate
            .as_ref()
            .is_none_or(|open| open.load(Ordering::SeqCst))
    }

    /// A fresh entry, if any. `key` may be a borrowed form of the key
    /// (hashing alike), so a lookup need not build an owned one.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        Q: Hash + quick_cache::Equivalent<K> + ?Sized,
    {
        let found = if self.is_open() {
            self.entries
                .get(key)
                .filter(|entry| entry.at.elapsed() < self.ttl)
                .map(|entry| entry.value)
        } else {
            None
        };
        if let Some(counters) = &self.counters {
            counters.record(found.is_some());
        }
        found
    }

    /// Starts a lookup that will fill the cache: counts it and returns the
    /// generation to insert with.
    pub fn begin_lookup(&self) -> Generation {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        Generation(self.generation.load(Ordering::SeqCst))
    }

    /// Stores what a lookup begun at `generation` found, unless anything
    /// was invalidated since.
    pub fn insert(&self, key: K, value: V, generation: Generation) {
        let _writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::SeqCst) != generation.0 || !self.is_open() {
            return;
        }
        self.entries.insert(
            key,
            Entry {
                value,
                at: Instant::now(),
            },
        );
    }

    /// Drops every entry `stale` picks, and any lookup in flight.
    pub fn invalidate(&self, stale: impl Fn(&K, &V) -> bool) {
        let _writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.retain(|key, entry| !stale(key, &entry.value));
    }

    pub fn clear(&self) {
        let _writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Lookups begun since start (each one a database read).
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_older_than_an_invalidation_is_not_cached() {
        let cache: GuardedCache<String, u32> = GuardedCache::new(10, Duration::from_secs(60));
        let generation = cache.begin_lookup();
        cache.insert("a".into(), 1, generation);
        assert_eq!(cache.get("a"), Some(1));
        cache.invalidate(|key, _| key == "a");
        assert_eq!(cache.get("a"), None);
        cache.insert("a".into(), 2, generation);
        assert_eq!(cache.get("a"), None, "stale insert dropped");
        cache.insert("a".into(), 3, cache.begin_lookup());
        assert_eq!(cache.get("a"), Some(3));
        assert_eq!(cache.lookups(), 2);
    }

    #[test]
    fn expired_entries_are_missing() {
        let cache: GuardedCache<u8, u8> = GuardedCache::new(10, Duration::ZERO);
        cache.insert(1, 1, cache.begin_lookup());
        assert_eq!(cache.get(&1), None);
    }

    #[test]
    fn stays_bounded() {
        let cache: GuardedCache<u32, u32> = GuardedCache::new(100, Duration::from_secs(60));
        for i in 0..1000 {
            cache.insert(i, i, cache.begin_lookup());
        }
        assert!(cache.len() <= 100, "{} entries", cache.len());
    }
}
