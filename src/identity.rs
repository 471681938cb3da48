//! Who is calling: the types every layer shares and the extractors
//! handlers take.
//!
//! The `auth` middleware (above the domains) decides who a request comes
//! from and leaves the outcome here with [`Resolved::store`]; handlers take
//! exactly one of [`Principal`], [`MaybePrincipal`] or [`FlowCaller`], so a
//! handler cannot forget to authenticate. The domains build principals
//! (`keys::authenticate_cached`, `sessions::authenticate`) from these types and
//! never import the middleware.
//!
//! Flow-bound keys are confined here, once: [`Principal`] and
//! [`MaybePrincipal`] refuse them (403), so no handler written with them can
//! be reached by such a key; only the gateway takes [`FlowCaller`], which
//! accepts them and leaves it to check that the flow run is the bound one.

use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use chrono::NaiveDateTime;
use uuid::Uuid;

use crate::error::AppError;

pub const API_KEY_HEADER: &str = "x-api-key";
pub const API_KEY_QUERY: &str = "x-api-key";

pub const MISSING_CREDENTIALS: &str = "An API key must be passed as the x-api-key header \
    or the x-api-key query parameter (or sign in for a session)";
pub const INVALID_KEY: &str = "Invalid API key";
pub const INVALID_SESSION: &str = "Invalid or expired session; sign in again";
pub const NOT_ENOUGH_PRIVILEGES: &str = "The user doesn't have enough privileges";
pub const FLOW_BOUND_KEY: &str = "This API key is bound to one flow and can only run it";
pub const FORBIDDEN_ADDRESS: &str = "This API key is not allowed from this address";

/// Machine-readable refusal reasons, sent in `X-Keygate-Reason`. An
/// invalid, revoked, expired or inactive key never gets one: those stay
/// one indistinguishable 401.
pub mod reason {
    pub const MISSING_SCOPE: &str = "MISSING_SCOPE";
    pub const FORBIDDEN_ADDRESS: &str = "FORBIDDEN_ADDRESS";
    pub const FLOW_BOUND_KEY: &str = "FLOW_BOUND_KEY";
    pub const INVALID_KEYS_THROTTLED: &str = "INVALID_KEYS_THROTTLED";
    /// The key's own rate limit (429 with `Retry-After`).
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
}

/// One right a key may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// GET routes about the owner's own objects.
    Read,
    /// Creating, changing and deleting the owner's objects.
    Write,
    /// Running flows (`/api/v1/run`, `/api/v1/process`).
    Run,
    /// Superuser routes (only for a superuser's key).
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Write, Scope::Run, Scope::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Run => "run",
            Scope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.name() == text)
    }

    /// The 403 for a key without this scope.
    pub fn missing(self) -> AppError {
        reject(
            "key lacks a scope",
            AppError::forbidden(format!("This API key lacks the '{}' scope", self.name()))
                .with_reason(reason::MISSING_SCOPE),
        )
    }
}

/// A set of scopes; every scope unless a key was given a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    pub const ALL: Scopes = Scopes(0b1111);

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn is_subset_of(self, other: Scopes) -> bool {
        self.0 & !other.0 == 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn without(self, scope: Scope) -> Scopes {
        Scopes(self.0 & !scope.bit())
    }

    pub fn of(scopes: impl IntoIterator<Item = Scope>) -> Scopes {
        Scopes(scopes.into_iter().fold(0, |bits, s| bits | s.bit()))
    }

    /// The stored form: `None` (every scope) or names separated by spaces.
    /// Unknown words in a stored list grant nothing.
    pub fn from_stored(text: Option<&str>) -> Scopes {
        match text {
            None => Scopes::ALL,
            Some(text) => Scopes::of(text.split_whitespace().filter_map(Scope::parse)),
        }
    }

    pub fn to_stored(self) -> Option<String> {
        (self != Scopes::ALL).then(|| self.names().join(" "))
    }

    pub fn names(self) -> Vec<&'static str> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.contains(*s))
            .map(Scope::name)
            .collect()
    }
}

/// What a key may do beyond proving who it is, parsed once when the key
/// enters the verification cache and checked per request from there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPolicy {
    pub scopes: Scopes,
    /// `None`: any address.
    pub allowed_ips: Option<Vec<crate::client_ip::Cidr>>,
    /// `(requests, per_seconds)`, enforced by the key domain; here so a
    /// limited key cannot give a key a looser limit.
    pub rate_limit: Option<(i64, i64)>,
}

impl KeyPolicy {
    pub const UNRESTRICTED: KeyPolicy = KeyPolicy {
        scopes: Scopes::ALL,
        allowed_ips: None,
        rate_limit: None,
    };

    /// From the stored columns. A stored address list that no longer
    /// parses allows no address (fails closed).
    pub fn from_stored(scopes: Option<&str>, allowed_ips: Option<&str>) -> KeyPolicy {
        KeyPolicy {
            scopes: Scopes::from_stored(scopes),
            allowed_ips: allowed_ips
                .map(|text| crate::client_ip::Cidr::parse_list(text).unwrap_or_default()),
            rate_limit: None,
        }
    }

    pub fn allows_address(&self, addr: std::net::IpAddr) -> bool {
        self.allowed_ips
            .as_ref()
            .is_none_or(|blocks| blocks.iter().any(|block| block.contains(addr)))
    }
}

/// The authenticated user, as every handler sees it: every field an answer
/// that only describes the caller (`whoami`) shows, so such answers are
/// served from the cached principal. Read with `db::auth_user_columns`
/// (the field order here is that tuple's); kept current by the
/// invalidation bus (`UserChanged`), which replaces the cached value, so
/// what was rendered from it ([`AuthUser::rendered`]) goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    pub id: String,
    pub username: String,
    pub is_superuser: bool,
    pub is_active: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub last_login_at: Option<NaiveDateTime>,
    rendered: Rendered,
}

/// The row of [`AuthUser`], as `db::auth_user_columns` selects it.
pub type AuthUserRow = (
    String,
    String,
    bool,
    bool,
    NaiveDateTime,
    NaiveDateTime,
    Option<NaiveDateTime>,
);

impl AuthUser {
    pub fn from_row(
        (id, username, is_superuser, is_active, created_at, updated_at, last_login_at): AuthUserRow,
    ) -> Self {
        AuthUser {
            id,
            username,
            is_superuser,
            is_active,
            created_at,
            updated_at,
            last_login_at,
            rendered: Rendered::default(),
        }
    }

    /// The answer that shows this user, rendered by `render` at its first
    /// use and kept with the value: a cached principal (a key's owner)
    /// answers `whoami` without serialising anything again.
    /// `None` when `render` fails (nothing is kept then).
    pub fn rendered(
        &self,
        render: impl FnOnce(&AuthUser) -> Option<web::Bytes>,
    ) -> Option<web::Bytes> {
        if let Some(body) = self.rendered.0.get() {
            return Some(body.clone());
        }
        let body = render(self)?;
        Some(self.rendered.0.get_or_init(|| body).clone())
    }
}

impl<ST, DB> diesel::Queryable<ST, DB> for AuthUser
where
    DB: diesel::backend::Backend,
    AuthUserRow: diesel::deserialize::FromStaticSqlRow<ST, DB>,
{
    type Row = AuthUserRow;

    fn build(row: AuthUserRow) -> diesel::deserialize::Result<Self> {
        Ok(AuthUser::from_row(row))
    }
}

/// What was rendered from an [`AuthUser`]: derived from its fields, so it
/// takes no part in comparing two users.
#[derive(Clone, Default)]
struct Rendered(std::sync::OnceLock<web::Bytes>);

impl PartialEq for Rendered {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Rendered {}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rendered")
    }
}

/// How the request proved who it is.
#[derive(Debug, Clone)]
pub enum Credential {
    /// `flow_id`: the one flow a flow-bound key may run.
    ApiKey {
        key_id: String,
        flow_id: Option<String>,
        /// Shared with the key cache.
        policy: Arc<KeyPolicy>,
    },
    Session {
        session_id: String,
        /// When the session ends (sessions are not extended by use).
        expires_at: NaiveDateTime,
        /// The token a page must echo in `X-CSRF-Token` (see
        /// `sessions::csrf_token`).
        csrf_token: String,
        /// True when the session came from the cookie, not `Authorization`.
        via_cookie: bool,
    },
}

#[derive(Debug, Clone)]
pub struct Principal {
    /// Shared with the key cache: a request costs no copy of the user.
    pub user: Arc<AuthUser>,
    pub credential: Credential,
}

impl Principal {
    /// A superuser's rights: the user is one and, for a key, the key has
    /// the `admin` scope.
    pub fn require_superuser(&self) -> Result<(), AppError> {
        if !self.user.is_superuser {
            Err(AppError::forbidden(NOT_ENOUGH_PRIVILEGES))
        } else if !self.scopes().contains(Scope::Admin) {
            Err(Scope::Admin.missing())
        } else {
            Ok(())
        }
    }

    /// True when the caller has a superuser's rights (see
    /// [`Self::require_superuser`]).
    pub fn is_superuser(&self) -> bool {
        self.user.is_superuser && self.scopes().contains(Scope::Admin)
    }

    /// What the credential may do: every scope for a session.
    pub fn scopes(&self) -> Scopes {
        match &self.credential {
            Credential::ApiKey { policy, .. } => policy.scopes,
            Credential::Session { .. } => Scopes::ALL,
        }
    }

    /// The scopes that mean something for this user: `admin` only for a
    /// superuser.
    pub fn effective(&self, scopes: Scopes) -> Scopes {
        if self.user.is_superuser {
            scopes
        } else {
            scopes.without(Scope::Admin)
        }
    }

    pub fn session_id(&self) -> Option<&str> {
        match &self.credential {
            Credential::Session { session_id, .. } => Some(session_id),
            Credential::ApiKey { .. } => None,
        }
    }

    /// The flow a flow-bound key is confined to.
    pub fn bound_flow(&self) -> Option<&str> {
        match &self.credential {
            Credential::ApiKey { flow_id, .. } => flow_id.as_deref(),
            Credential::Session { .. } => None,
        }
    }

    /// When the session the request came with ends, if it came with one.
    pub fn session_expires_at(&self) -> Option<NaiveDateTime> {
        match &self.credential {
            Credential::Session { expires_at, .. } => Some(*expires_at),
            Credential::ApiKey { .. } => None,
        }
    }

    /// The CSRF token of the session the request came with, if any.
    pub fn csrf_token(&self) -> Option<&str> {
        match &self.credential {
            Credential::Session { csrf_token, .. } => Some(csrf_token),
            Credential::ApiKey { .. } => None,
        }
    }

    /// True when the request authenticated with an `sk-` key.
    pub fn is_api_key(&self) -> bool {
        matches!(self.credential, Credential::ApiKey { .. })
    }
}

/// A principal when the request carries credentials, `None` when it
/// carries none at all. Bad credentials are still refused.
pub struct MaybePrincipal(pub Option<Principal>);

/// Who calls a flow run: like [`MaybePrincipal`], but flow-bound keys are
/// let through. Only the gateway may take it, and it must then refuse a
/// flow-bound key for any flow but its own.
pub struct FlowCaller(pub Option<Principal>);

/// What the middleware found, kept in the request's extensions until the
/// handler's one principal extractor takes it.
pub struct Resolved(Result<Option<Principal>, AppError>);

impl Resolved {
    /// Called by the middleware, before any handler runs.
    pub fn store(req: &HttpRequest, outcome: Result<Option<Principal>, AppError>) {
        req.extensions_mut().insert(Resolved(outcome));
    }

    /// Moves the outcome out rather than copying it: each handler takes
    /// exactly one extractor.
    pub fn take(req: &HttpRequest) -> Result<Option<Principal>, AppError> {
        match req.extensions_mut().remove::<Resolved>() {
            Some(Resolved(outcome)) => outcome,
            None => Err(AppError::internal(
                "authentication middleware is not installed",
            )),
        }
    }
}

/// The target of the access log, one line per request (see `server`).
pub const ACCESS_LOG: &str = "keygate::access";

/// Who a request came from, for its access log line: the user and, for a
/// key, the key's id (never the key). Left in the request by the `auth`
/// middleware, only while the access log is on.
#[derive(Debug, Clone)]
pub struct LoggedCaller {
    pub user: Arc<AuthUser>,
    pub key_id: Option<String>,
}

impl LoggedCaller {
    pub fn store(req: &HttpRequest, principal: &Principal) {
        if !tracing::enabled!(target: ACCESS_LOG, tracing::Level::INFO) {
            return;
        }
        let key_id = match &principal.credential {
            Credential::ApiKey { key_id, .. } => Some(key_id.clone()),
            Credential::Session { .. } => None,
        };
        req.extensions_mut().insert(LoggedCaller {
            user: principal.user.clone(),
            key_id,
        });
    }

    pub fn of(req: &HttpRequest) -> Option<LoggedCaller> {
        req.extensions().get::<LoggedCaller>().cloned()
    }
}

/// Logs why a request was refused (debug level) and hands the error back.
pub fn reject(reason: &'static str, error: AppError) -> AppError {
    tracing::debug!(
        reason,
        status = error.status().as_u16(),
        "authentication rejected"
    );
    error
}

/// The outcome for every extractor but [`FlowCaller`]: flow-bound keys are
/// refused.
fn resolved_unbound(req: &HttpRequest) -> Result<Option<Principal>, AppError> {
    let principal = Resolved::take(req)?;
    if principal.as_ref().is_some_and(|p| p.bound_flow().is_some()) {
        return Err(reject(
            "flow-bound key outside its flow",
            AppError::forbidden(FLOW_BOUND_KEY).with_reason(reason::FLOW_BOUND_KEY),
        ));
    }
    Ok(principal)
}

/// The outcome for [`Principal`] and [`ById`]: credentials are required.
fn resolved_principal(req: &HttpRequest) -> Result<Principal, AppError> {
    resolved_unbound(req).and_then(|principal| {
        principal.ok_or_else(|| {
            reject(
                "missing credentials",
                AppError::unauthorized(MISSING_CREDENTIALS),
            )
        })
    })
}

impl FromRequest for Principal {
    type Error = AppError;
    type Future = std::future::Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(resolved_principal(req))
    }
}

impl FromRequest for MaybePrincipal {
    type Error = AppError;
    type Future = std::future::Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(resolved_unbound(req).map(MaybePrincipal))
    }
}

impl FromRequest for FlowCaller {
    type Error = AppError;
    type Future = std::future::Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Resolved::take(req).map(FlowCaller))
    }
}

/// The caller and the `{id}` of the one resource a route addresses: the
/// start of every route on a resource by id. The id is a UUID, given back
/// as text; the route's `PathConfig` words a malformed one. The caller is
/// checked first, as when the two were separate extractors.
pub struct ById {
    pub principal: Principal,
    pub id: String,
}

impl ById {
    /// The caller's user id, to move into database work.
    pub fn user_id(&self) -> String {
        self.principal.user.id.clone()
    }
}

impl FromRequest for ById {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let by_id = resolved_principal(req)
            .map_err(actix_web::Error::from)
            .and_then(|principal| {
                let id = web::Path::<Uuid>::from_request(req, payload).into_inner()?;
                Ok(ById {
                    principal,
                    id: id.into_inner().to_string(),
                })
            });
        std::future::ready(by_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_and_fail_closed() {
        assert_eq!(Scopes::ALL.to_stored(), None);
        assert_eq!(Scopes::from_stored(None), Scopes::ALL);
        let read_run = Scopes::of([Scope::Run, Scope::Read]);
        assert_eq!(read_run.to_stored().as_deref(), Some("read run"));
        assert_eq!(Scopes::from_stored(Some("read run")), read_run);
        // Unknown stored words grant nothing.
        assert_eq!(
            Scopes::from_stored(Some("read everything")),
            Scopes::of([Scope::Read])
        );
        assert!(read_run.is_subset_of(Scopes::ALL));
        assert!(!Scopes::ALL.is_subset_of(read_run));
        assert!(Scopes::ALL.without(Scope::Admin).is_subset_of(Scopes::ALL));
    }

    #[test]
    fn address_lists_fail_closed() {
        let any = KeyPolicy::from_stored(None, None);
        assert!(any.allows_address("198.51.100.1".parse().unwrap()));
        let listed = KeyPolicy::from_stored(None, Some("203.0.113.0/24,2001:db8::/32"));
        assert!(listed.allows_address("203.0.113.200".parse().unwrap()));
        assert!(listed.allows_address("::ffff:203.0.113.1".parse().unwrap()));
        assert!(!listed.allows_address("203.0.114.1".parse().unwrap()));
        let broken = KeyPolicy::from_stored(None, Some("203.0.113.0/99"));
        assert!(!broken.allows_address("203.0.113.1".parse().unwrap()));
    }
}
