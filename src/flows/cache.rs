//! The flows a run may reach, as the gateway asks for them: one of the
//! caller's own (by owner and identifier) or another user's public flow
//! (by identifier). Both are kept in memory with their upstream already
//! parsed, found or not, so a warm run costs no database read.
//!
//! The cache subscribes to the invalidation bus: every flow write publishes
//! `FlowsChanged(owner)` before the API answers, which drops the owner's
//! entries and every public answer; a change of the owner (`UserChanged`)
//! does the same; a bound key appearing or going (`KeyCreated`,
//! `KeyChanged`) drops the public answers, which depend on bound keys. A
//! public flow guarded by expiring bound keys is looked up again once the
//! last of them has expired.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::NaiveDateTime;

use crate::bus::{Event, Subscriber};
use crate::cache::GuardedCache;
use crate::db::{self, DbPool};
use crate::error::AppError;
use crate::flows::store::{self, Flow, Identifier};
use crate::flows::upstream::Upstream;
use crate::keys::store::{self as key_store, BoundKeyGuard};
use crate::metrics::{Metrics, UpstreamSeries};
use crate::outbound::Endpoint;

/// The parts of a flow a run uses, its upstream parsed once.
#[derive(Debug, Clone)]
pub struct RunnableFlow {
    pub id: String,
    pub user_id: String,
    pub endpoint_name: Option<String>,
    pub upstream: Option<Upstream>,
    /// The gateway's upstream metric handles for this flow, resolved at
    /// its first run (see `metrics::Metrics::upstream_series`).
    pub upstream_series: OnceLock<UpstreamSeries>,
    /// Where each of the gateway's routes is sent: the upstream URL parsed,
    /// passed through the SSRF rule and taken apart at its first call (a
    /// flow's upstream only changes by replacing the cached flow). Indexed
    /// by the gateway.
    pub upstream_endpoints: [OnceLock<Endpoint>; UPSTREAM_ROUTES],
}

/// How many routes a flow's upstream serves (see `gateway::Route`).
pub const UPSTREAM_ROUTES: usize = 4;

impl TryFrom<Flow> for RunnableFlow {
    type Error = AppError;

    fn try_from(flow: Flow) -> Result<Self, AppError> {
        Ok(RunnableFlow {
            upstream: Upstream::from_column(flow.upstream.as_deref())?,
            id: flow.id,
            user_id: flow.user_id,
            endpoint_name: flow.endpoint_name,
            upstream_series: OnceLock::new(),
            upstream_endpoints: Default::default(),
        })
    }
}

/// (owner id, identifier as the caller wrote it).
type OwnKey = (String, String);

/// An [`OwnKey`] lookup without building one: hashes as the tuple does
/// (each string in turn).
#[derive(Hash)]
struct OwnKeyRef<'a>(&'a str, &'a str);

impl quick_cache::Equivalent<OwnKey> for OwnKeyRef<'_> {
    fn equivalent(&self, key: &OwnKey) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

/// A public lookup's answer and, when bound keys with an expiry hide the
/// flow, the moment the answer must be looked up again.
#[derive(Clone)]
struct PublicAnswer {
    flow: Option<Arc<RunnableFlow>>,
    recheck_at: Option<NaiveDateTime>,
}

pub struct FlowCache {
    pool: DbPool,
    own: GuardedCache<OwnKey, Option<Arc<RunnableFlow>>>,
    public: GuardedCache<String, PublicAnswer>,
}

impl FlowCache {
    /// `current`: the bus's flag; the cache is bypassed while this
    /// instance may be missing invalidations.
    pub fn new(
        pool: DbPool,
        capacity: usize,
        ttl: Duration,
        current: Arc<AtomicBool>,
        metrics: &Metrics,
    ) -> Self {
        FlowCache {
            pool,
            own: GuardedCache::new(capacity, ttl)
                .gated(current.clone())
                .counted(metrics.cache("flows")),
            public: GuardedCache::new(capacity, ttl)
                .gated(current)
                .counted(metrics.cache("public_flows")),
        }
    }

    /// One of `owner`'s flows by id or endpoint name.
    pub async fn own(
        &self,
        owner: &str,
        identifier: &str,
    ) -> Result<Option<Arc<RunnableFlow>>, AppError> {
        if let Some(found) = self.own.get(&OwnKeyRef(owner, identifier)) {
            return Ok(found);
        }
        let key = (owner.to_string(), identifier.to_string());
        let generation = self.own.begin_lookup();
        let (lookup_owner, lookup) = (owner.to_string(), Identifier::parse(identifier));
        let found = db::run(&self.pool, move |conn| {
            store::find_by_identifier_for_user(conn, &lookup_owner, &lookup)
        })
        .await?
        .map(RunnableFlow::try_from)
        .transpose()?
        .map(Arc::new);
        self.own.insert(key, found.clone(), generation);
        Ok(found)
    }

    /// The public flow with this identifier, when exactly one exists and no
    /// usable flow-bound key guards it.
    pub async fn public(&self, identifier: &str) -> Result<Option<Arc<RunnableFlow>>, AppError> {
        let now = db::now();
        if let Some(answer) = self.public.get(identifier) {
            if answer.recheck_at.is_none_or(|at| now < at) {
                return Ok(answer.flow);
            }
        }
        let generation = self.public.begin_lookup();
        let parsed = Identifier::parse(identifier);
        let answer = db::run(&self.pool, move |conn| {
            let mut public = store::find_public(conn, &parsed)?;
            // An endpoint name is unique per user only: two users'
            // public flows with one name are run by id.
            if public.len() != 1 {
                return Ok(PublicAnswer {
                    flow: None,
                    recheck_at: None,
                });
            }
            let flow = public.remove(0);
            Ok::<_, AppError>(match key_store::bound_key_guard(conn, &flow.id, now)? {
                BoundKeyGuard::None => PublicAnswer {
                    flow: Some(Arc::new(RunnableFlow::try_from(flow)?)),
                    recheck_at: None,
                },
                BoundKeyGuard::Until(at) => PublicAnswer {
                    flow: None,
                    recheck_at: Some(at),
                },
                BoundKeyGuard::Forever => PublicAnswer {
                    flow: None,
                    recheck_at: None,
                },
            })
        })
        .await?;
        self.public
            .insert(identifier.to_string(), answer.clone(), generation);
        Ok(answer.flow)
    }

    /// Lookups of own flows that reached the database since start.
    pub fn database_lookups(&self) -> u64 {
        self.own.lookups()
    }

    /// Public lookups that reached the database since start.
    pub fn public_database_lookups(&self) -> u64 {
        self.public.lookups()
    }
}

impl Subscriber for FlowCache {
    fn on_event(&self, event: &Event) {
        match event {
            Event::FlowsChanged(owner) | Event::UserChanged(owner) => {
                self.own
                    .invalidate(|(flow_owner, _), _| flow_owner == owner);
                self.public.clear();
            }
            Event::KeyChanged(_) | Event::KeyCreated(_) => self.public.clear(),
            Event::All => {
                self.own.clear();
                self.public.clear();
            }
            Event::SecretsChanged(_) | Event::SecretRotated => {}
        }
    }
}
