//! What the gateway takes from the rest of keygate to reach an upstream:
//! the owner's stored secrets (provider credentials and Credential
//! variables, decrypted with `state.secrets`) and the outbound upstream
//! client with its SSRF policy (`state.outbound`). The gateway writes no
//! crypto and no address check of its own.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use secrecy::SecretString;

use crate::bus::{Event, Subscriber};
use crate::cache::GuardedCache;
use crate::credentials::{self, Provider};
use crate::db;
use crate::error::AppError;
use crate::flows::{CredentialRef, SecretSource, SecretSourceRef};
use crate::state::AppState;
use crate::variables::store as variable_store;

/// A decrypted secret. `SecretString` zeroizes it when the last holder
/// (the cache or a run in flight) drops it, and never prints it.
#[derive(Debug)]
pub struct Secret {
    /// The public half, where the provider has one (Langfuse's public key).
    pub public: Option<String>,
    pub secret: SecretString,
}

/// (owner id, which of the owner's secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
struct SecretKey {
    owner: String,
    source: SecretSource,
}

/// A [`SecretKey`] lookup without building one; both hash through it.
#[derive(PartialEq, Eq, Hash)]
struct SecretKeyRef<'a> {
    owner: &'a str,
    source: SecretSourceRef<'a>,
}

impl Hash for SecretKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.borrowed().hash(state);
    }
}

impl SecretKey {
    fn borrowed(&self) -> SecretKeyRef<'_> {
        SecretKeyRef {
            owner: &self.owner,
            source: self.source.borrowed(),
        }
    }
}

impl quick_cache::Equivalent<SecretKey> for SecretKeyRef<'_> {
    fn equivalent(&self, key: &SecretKey) -> bool {
        *self == key.borrowed()
    }
}

/// The owners' decrypted secrets a run injects, kept in memory so a warm
/// run neither reads the database nor decrypts. Bounded; every write of a
/// credential or variable publishes `SecretsChanged(owner)` before the API
/// answers, a change of the owner `UserChanged`, `rotate-secret`
/// `SecretRotated`: each drops what it names, here and on every instance.
/// A secret that is not stored is not cached (the run is refused anyway).
pub struct SecretCache {
    entries: GuardedCache<SecretKey, Arc<Secret>>,
}

impl SecretCache {
    /// `current`: the bus's flag; the cache is bypassed while this
    /// instance may be missing invalidations.
    pub fn new(
        capacity: usize,
        ttl: std::time::Duration,
        current: Arc<std::sync::atomic::AtomicBool>,
        metrics: &crate::metrics::Metrics,
    ) -> Self {
        SecretCache {
            entries: GuardedCache::new(capacity, ttl)
                .gated(current)
                .counted(metrics.cache("secrets")),
        }
    }

    /// The owner's secret the flow's credential names, decrypted. A
    /// credential or variable that is not (or no longer) stored is a 422
    /// naming it.
    pub async fn fetch(
        &self,
        state: &AppState,
        owner_id: &str,
        credential: &CredentialRef,
    ) -> Result<Arc<Secret>, AppError> {
        let source = credential.source_ref()?;
        let lookup = SecretKeyRef {
            owner: owner_id,
            source,
        };
        if let Some(secret) = self.entries.get(&lookup) {
            return Ok(secret);
        }
        let key = SecretKey {
            owner: owner_id.to_string(),
            source: source.to_owned(),
        };
        let generation = self.entries.begin_lookup();
        let secret = Arc::new(load(state, owner_id, &key.source).await?);
        self.entries.insert(key, secret.clone(), generation);
        Ok(secret)
    }

    /// Reads of the database (and decryptions) since start.
    pub fn database_lookups(&self) -> u64 {
        self.entries.lookups()
    }
}

impl Subscriber for SecretCache {
    fn on_event(&self, event: &Event) {
        match event {
            Event::SecretsChanged(owner) | Event::UserChanged(owner) => {
                self.entries.invalidate(|key, _| key.owner == *owner)
            }
            Event::SecretRotated | Event::All => self.entries.clear(),
            Event::KeyChanged(_) | Event::KeyCreated(_) | Event::FlowsChanged(_) => {}
        }
    }
}

async fn load(state: &AppState, owner_id: &str, source: &SecretSource) -> Result<Secret, AppError> {
    match source {
        SecretSource::Provider(name) => {
            let provider = Provider::parse(name)?;
            let stored = credentials::load_decrypted(state, owner_id, provider)
                .await?
                .ok_or_else(|| {
                    AppError::unprocessable(format!(
                        "The flow's upstream uses the owner's {} credential, which is not stored",
                        provider.as_str()
                    ))
                })?;
            Ok(Secret {
                public: stored.public_key,
                secret: stored.secret_key,
            })
        }
        SecretSource::Variable(name) => {
            let owner = owner_id.to_string();
            let lookup = name.clone();
            let variable = db::run(&state.pool, move |conn| {
                variable_store::find_by_name(conn, &owner, &lookup)
            })
            .await?
            .ok_or_else(|| {
                AppError::unprocessable(format!(
                    "The flow's upstream uses the owner's variable {name:?}, which does not exist"
                ))
            })?;
            if variable.var_type != variable_store::CREDENTIAL {
                return Err(AppError::unprocessable(format!(
                    "The flow's upstream uses the variable {name:?}, which is not a Credential variable"
                )));
            }
            Ok(Secret {
                public: None,
                secret: SecretString::from(state.secrets.decrypt(&variable.value)?),
            })
        }
    }
}

/// Where a flow's upstream URL is sent, after the SSRF rule for URLs (the
/// same as for provider hosts).
pub fn endpoint(state: &AppState, url: &str) -> Result<crate::outbound::Endpoint, AppError> {
    state.outbound.endpoint(url)
}

/// 502 (unreachable), 504 (time-out) or 422 (refused address), naming the
/// host but never the query or a secret.
pub fn upstream_error(state: &AppState, error: &crate::outbound::ForwardError) -> AppError {
    state.outbound.forward_error(error, "the flow's upstream")
}
