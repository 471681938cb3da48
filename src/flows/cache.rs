//! What the gateway needs to run a key owner's flow (id, owner, upstream),
//! kept in memory by (owner, identifier) so a run costs no database read.
//!
//! Every flow write calls `KeyVerifier::forget_flows`, which evicts the
//! owner's entries here before the API answers and tells other instances
//! (the same LISTEN/NOTIFY path as key revocations). As for keys, a
//! generation counter keeps a lookup that raced with a change from caching
//! what it read before it, and entries older than the TTL are read again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The parts of a flow a run uses.
#[derive(Debug, Clone)]
pub struct RunnableFlow {
    pub id: String,
    pub user_id: String,
    pub upstream: Option<String>,
}

struct Cached {
    flow: Arc<RunnableFlow>,
    owner: String,
    at: Instant,
}

pub struct FlowCache {
    entries: RwLock<HashMap<String, Cached>>,
    generation: AtomicU64,
    capacity: usize,
    ttl: Duration,
}

fn cache_key(owner: &str, identifier: &str) -> String {
    format!("{owner}\n{identifier}")
}

impl FlowCache {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        FlowCache {
            entries: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            capacity: capacity.max(1),
            ttl,
        }
    }

    pub fn get(&self, owner: &str, identifier: &str) -> Option<Arc<RunnableFlow>> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .get(&cache_key(owner, identifier))
            .filter(|c| c.at.elapsed() < self.ttl)
            .map(|c| c.flow.clone())
    }

    /// Read before the database lookup whose result goes to [`Self::insert`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub fn insert(&self, owner: &str, identifier: &str, flow: Arc<RunnableFlow>, generation: u64) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        if entries.len() >= self.capacity {
            let ttl = self.ttl;
            entries.retain(|_, c| c.at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(
            cache_key(owner, identifier),
            Cached {
                flow,
                owner: owner.to_string(),
                at: Instant::now(),
            },
        );
    }

    /// Drops every cached flow of one owner.
    pub fn forget_owner(&self, owner: &str) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.retain(|_, c| c.owner != owner);
    }

    pub fn clear(&self) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(id: &str) -> Arc<RunnableFlow> {
        Arc::new(RunnableFlow {
            id: id.into(),
            user_id: "u".into(),
            upstream: None,
        })
    }

    #[test]
    fn caches_per_owner_and_forgets_on_change() {
        let cache = FlowCache::new(10, Duration::from_secs(60));
        let generation = cache.generation();
        cache.insert("u", "bench", flow("f1"), generation);
        assert_eq!(cache.get("u", "bench").unwrap().id, "f1");
        assert!(cache.get("v", "bench").is_none());
        cache.forget_owner("u");
        assert!(cache.get("u", "bench").is_none());
        // A lookup that started before the change is not cached after it.
        cache.insert("u", "bench", flow("stale"), generation);
        assert!(cache.get("u", "bench").is_none());
    }
}
