//! The flows a run may reach, as the gateway asks for them: one of the
//! caller's own (kept in memory by owner and identifier, so a run costs no
//! database read) or another user's public flow.
//!
//! The cache subscribes to the invalidation bus: every flow write publishes
//! `FlowsChanged(owner)` before the API answers, and a change of the owner
//! (`UserChanged`) drops their entries too, here and on other instances.

use std::sync::Arc;
use std::time::Duration;

use crate::bus::{Event, Subscriber};
use crate::cache::GuardedCache;
use crate::db::{self, DbPool};
use crate::error::AppError;
use crate::flows::store::{self, Flow, Identifier};
use crate::keys::store as key_store;

/// The parts of a flow a run uses.
#[derive(Debug, Clone)]
pub struct RunnableFlow {
    pub id: String,
    pub user_id: String,
    pub upstream: Option<String>,
}

impl From<Flow> for RunnableFlow {
    fn from(flow: Flow) -> Self {
        RunnableFlow {
            id: flow.id,
            user_id: flow.user_id,
            upstream: flow.upstream,
        }
    }
}

/// (owner id, identifier as the caller wrote it).
type CacheKey = (String, String);

pub struct FlowCache {
    pool: DbPool,
    own: GuardedCache<CacheKey, Arc<RunnableFlow>>,
}

impl FlowCache {
    pub fn new(pool: DbPool, capacity: usize, ttl: Duration) -> Self {
        FlowCache {
            pool,
            own: GuardedCache::new(capacity, ttl),
        }
    }

    /// One of `owner`'s flows by id or endpoint name.
    pub async fn own(
        &self,
        owner: &str,
        identifier: &str,
    ) -> Result<Option<Arc<RunnableFlow>>, AppError> {
        let key = (owner.to_string(), identifier.to_string());
        if let Some(flow) = self.own.get(&key) {
            return Ok(Some(flow));
        }
        let generation = self.own.begin_lookup();
        let (lookup_owner, lookup) = (owner.to_string(), Identifier::parse(identifier));
        let found = db::run(&self.pool, move |conn| {
            store::find_by_identifier_for_user(conn, &lookup_owner, &lookup)
        })
        .await?
        .map(|flow| Arc::new(RunnableFlow::from(flow)));
        if let Some(flow) = &found {
            self.own.insert(key, flow.clone(), generation);
        }
        Ok(found)
    }

    /// The public flow with this identifier, when exactly one exists and no
    /// active flow-bound key guards it. Read from the database each time.
    pub async fn public(&self, identifier: &str) -> Result<Option<Arc<RunnableFlow>>, AppError> {
        let parsed = Identifier::parse(identifier);
        let now = db::now();
        db::run(&self.pool, move |conn| {
            let mut public = store::find_public(conn, &parsed)?;
            // An endpoint name is unique per user only: two users'
            // public flows with one name are run by id.
            if public.len() != 1 {
                return Ok(None);
            }
            let flow = public.remove(0);
            if key_store::flow_has_usable_bound_key(conn, &flow.id, now)? {
                return Ok(None);
            }
            Ok::<_, AppError>(Some(Arc::new(RunnableFlow::from(flow))))
        })
        .await
    }

    /// Lookups of own flows that reached the database since start.
    pub fn database_lookups(&self) -> u64 {
        self.own.lookups()
    }
}

impl Subscriber for FlowCache {
    fn on_event(&self, event: &Event) {
        match event {
            Event::FlowsChanged(owner) | Event::UserChanged(owner) => self
                .own
                .invalidate(|(flow_owner, _), _| flow_owner == owner),
            Event::All => self.own.clear(),
            Event::KeyChanged(_)
            | Event::KeyCreated
            | Event::SecretsChanged(_)
            | Event::SecretRotated => {}
        }
    }
}
