//! `sk-` API keys: Langflow-compatible routes under `/api/v1/api_key/`.

pub mod filter;
pub mod limits;
pub mod store;
pub mod token;
pub mod usage;
pub mod verify;

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::audit::{self, Action, Entry, Origin};
use crate::bus::Event;
use crate::client_ip::Cidr;
use crate::db::{self, DbConnection};
use crate::error::AppError;
use crate::identity::{ById, Credential, Principal, Scope, Scopes};
use crate::routing;
use crate::state::AppState;
use crate::token::PlainKey;
use crate::validate::{self, LenientJson};
pub use filter::KeyFilter;
use limits::{RateLimit, RateLimiter};
use usage::UsageRecorder;
pub use verify::{authenticate_cached, authenticate_stored, CacheAnswer, KeyCaller, KeyVerifier};

pub const MAX_NAME_LEN: usize = 255;
const KEY_NOT_FOUND: &str = "API Key not found";
const USER_NOT_FOUND: &str = "User not found";
pub const REVOKE_ALL_NEEDS_SESSION: &str =
    "Revoking all keys at once needs a signed-in session, not an API key";
pub const REVOKE_ALL_UNCONFIRMED: &str =
    "Send {\"all\": true} to revoke every key at once; one key is DELETE /api/v1/api_key/{id}";
/// A key bound to a flow that is not (or no longer) the caller's.
const BOUND_FLOW_NOT_FOUND: &str = "Flow not found";

pub fn routes(cfg: &mut web::ServiceConfig) {
    routing::resources!(cfg {
        "/api_key": get list_keys, post create_key, delete revoke_all;
        "/api_key/{id}" ["API key"]: delete delete_key, patch update_key;
        "/api_key/{id}/rotate" ["API key"]: post rotate_key;
        "/api_key/{id}/usage" ["API key"]: get key_usage;
    });
}

/// The key domain's long-lived parts: the verifier (subscribed to the
/// bus), and the usage counters and rate-limit windows it shares.
pub fn services(state: &AppState) -> (Arc<KeyVerifier>, Arc<UsageRecorder>, Arc<RateLimiter>) {
    let usage = Arc::new(UsageRecorder::new(state.pool.clone()));
    let limiter = Arc::new(RateLimiter::new(state.pool.clone()));
    let filter = KeyFilter::new(
        state.pool.clone(),
        &state.config.database_url,
        state.bus.current(),
    );
    state.bus.subscribe(&filter);
    filter.load(0);
    let verifier = Arc::new(KeyVerifier::new(
        state.pool.clone(),
        verify::CacheSettings::from_config(&state.config),
        usage.clone(),
        limiter.clone(),
        filter,
        state.bus.current(),
        &state.metrics,
    ));
    state.bus.subscribe(&verifier);
    (verifier, usage, limiter)
}

/// A key as listed: masked, with its usage.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ApiKeyView {
    pub id: String,
    pub name: Option<String>,
    pub api_key: String,
    pub user_id: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// The client address of the latest use.
    pub last_used_from: Option<String>,
    pub total_uses: i64,
    pub is_active: bool,
    pub expires_at: Option<DateTime<Utc>>,
    /// The one flow the key may run; `null` for an ordinary key.
    pub flow_id: Option<String>,
    pub scopes: Vec<&'static str>,
    /// `null`: any address.
    pub allowed_ips: Option<Vec<String>>,
    /// `null`: no limit.
    pub rate_limit: Option<RateLimit>,
}

impl From<store::ApiKey> for ApiKeyView {
    fn from(key: store::ApiKey) -> Self {
        ApiKeyView {
            api_key: token::mask(&key.display_prefix),
            id: key.id,
            name: key.name,
            user_id: key.user_id,
            created_at: key.created_at.and_utc(),
            last_used_at: key.last_used_at.map(|t| t.and_utc()),
            last_used_from: key.last_used_from,
            total_uses: key.total_uses,
            is_active: key.is_active,
            expires_at: key.expires_at.map(|t| t.and_utc()),
            flow_id: key.flow_id,
            scopes: Scopes::from_stored(key.scopes.as_deref()).names(),
            allowed_ips: key
                .allowed_ips
                .map(|text| text.split(',').map(str::to_string).collect()),
            rate_limit: RateLimit::from_stored(key.rate_limit_requests, key.rate_limit_seconds),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct KeyList {
    total_count: usize,
    user_id: String,
    api_keys: Vec<ApiKeyView>,
}

#[derive(Deserialize, utoipa::ToSchema)]
struct CreateKeyRequest {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
    /// Binds the new key to one of the caller's flows.
    #[serde(default)]
    flow_id: Option<String>,
    /// `null` or absent: every scope.
    #[serde(default)]
    scopes: Option<Vec<String>>,
    /// `null` or absent: any address.
    #[serde(default)]
    allowed_ips: Option<Vec<String>>,
    /// `{"requests": N, "per_seconds": S}`; `null` or absent: no limit.
    #[serde(default)]
    #[schema(value_type = Option<RateLimit>)]
    rate_limit: Option<serde_json::Value>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    #[serde(default)]
    grace_seconds: Option<i64>,
}

/// The old key's overlap after a rotation, by default and at most.
const DEFAULT_GRACE_SECONDS: i64 = 86_400;
const MAX_GRACE_SECONDS: i64 = 30 * 86_400;
/// The most address blocks one key may list.
const MAX_ALLOWED_IPS: usize = 100;

/// A rotation's answer: the new key (shown once) and when the old stops.
#[derive(Serialize, utoipa::ToSchema)]
struct RotatedView {
    #[serde(flatten)]
    key: ApiKeyView,
    old_key_id: String,
    old_key_expires_at: DateTime<Utc>,
}

/// `?user_id=`: whose keys a route is about (the caller's by default;
/// another user's only for a superuser).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct KeyOwner {
    #[serde(default)]
    user_id: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RevokeAllRequest {
    #[serde(default)]
    all: bool,
}

/// What `DELETE /api/v1/api_key/` revoked.
#[derive(Serialize, utoipa::ToSchema)]
struct RevokedAll {
    revoked: usize,
    user_id: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateKeyRequest {
    #[serde(default, deserialize_with = "validate::double_option")]
    name: Option<Option<String>>,
    #[serde(default)]
    is_active: Option<bool>,
    #[serde(default, deserialize_with = "validate::double_option")]
    scopes: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "validate::double_option")]
    allowed_ips: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<RateLimit>)]
    rate_limit: Option<Option<serde_json::Value>>,
}

/// The scopes a request names: known ones, at least one, `admin` only for
/// a superuser's key (403).
fn parse_scopes(principal: &Principal, list: Vec<String>) -> Result<Scopes, AppError> {
    let mut scopes = Vec::with_capacity(list.len());
    for name in &list {
        scopes.push(Scope::parse(name.trim()).ok_or_else(|| {
            AppError::unprocessable(format!(
                "Unknown scope {name:?}; scopes are read, write, run and admin"
            ))
        })?);
    }
    let scopes = Scopes::of(scopes);
    if scopes.is_empty() {
        return Err(AppError::unprocessable(
            "scopes must name at least one of read, write, run, admin (null or absent: all)",
        ));
    }
    if scopes.contains(Scope::Admin) && !principal.user.is_superuser {
        return Err(AppError::forbidden(
            "Only a superuser's key can have the 'admin' scope",
        ));
    }
    Ok(scopes)
}

/// The request's scopes for a key; a flow-bound key has `run` only.
fn key_scopes(
    principal: &Principal,
    list: Option<Vec<String>>,
    flow_bound: bool,
) -> Result<Scopes, AppError> {
    let run_only = Scopes::of([Scope::Run]);
    let scopes = match list {
        None if flow_bound => run_only,
        None => Scopes::ALL,
        Some(list) => parse_scopes(principal, list)?,
    };
    if flow_bound && scopes != run_only {
        return Err(AppError::unprocessable(
            "A key bound to a flow has the 'run' scope only",
        ));
    }
    Ok(scopes)
}

/// No escalation: a key gives no key a scope it lacks itself, an address
/// its own list does not cover, or a looser rate limit than its own.
/// Sessions may give anything.
fn check_no_escalation(
    principal: &Principal,
    scopes: Scopes,
    allowed_ips: Option<&str>,
    rate_limit: Option<RateLimit>,
) -> Result<(), AppError> {
    let Credential::ApiKey { policy, .. } = &principal.credential else {
        return Ok(());
    };
    if !principal
        .effective(scopes)
        .is_subset_of(principal.effective(policy.scopes))
    {
        return Err(AppError::forbidden(
            "An API key cannot give a key scopes it lacks itself",
        ));
    }
    if let Some(own) = &policy.allowed_ips {
        let covered = allowed_ips.is_some_and(|text| {
            Cidr::parse_list(text).is_ok_and(|blocks| {
                blocks
                    .iter()
                    .all(|block| own.iter().any(|outer| block.within(outer)))
            })
        });
        if !covered {
            return Err(AppError::forbidden(
                "An API key cannot give a key addresses beyond its own allowed_ips",
            ));
        }
    }
    if let Some((requests, per_seconds)) = policy.rate_limit {
        let own = RateLimit {
            requests,
            per_seconds,
        };
        if !rate_limit.is_some_and(|limit| limit.is_within(own)) {
            return Err(AppError::forbidden(
                "An API key cannot give a key a looser rate_limit than its own",
            ));
        }
    }
    Ok(())
}

/// The stored form of an address list: comma-separated blocks, each
/// checked.
fn parse_allowed_ips(list: Vec<String>) -> Result<String, AppError> {
    if list.is_empty() {
        return Err(AppError::unprocessable(
            "allowed_ips must list at least one address or CIDR block (null: any address)",
        ));
    }
    if list.len() > MAX_ALLOWED_IPS {
        return Err(AppError::unprocessable(format!(
            "allowed_ips may list at most {MAX_ALLOWED_IPS} blocks"
        )));
    }
    let mut blocks = Vec::with_capacity(list.len());
    for entry in &list {
        let entry = entry.trim();
        entry
            .parse::<Cidr>()
            .map_err(|error| AppError::unprocessable(format!("allowed_ips: {error}")))?;
        blocks.push(entry);
    }
    Ok(blocks.join(","))
}

fn check_name(name: Option<String>) -> Result<Option<String>, AppError> {
    validate::optional_text("name", name, MAX_NAME_LEN)
}

/// The years a timestamp may have: what RFC 3339 can write back.
const YEARS: std::ops::RangeInclusive<i32> = 1970..=9999;

/// Accepts RFC 3339 (`2030-01-01T00:00:00Z`, with an offset) or a naive
/// ISO date-time taken as UTC, as Langflow's clients send it, in the years
/// 1970 to 9999.
pub fn parse_timestamp(text: &str) -> Option<NaiveDateTime> {
    parse_any_timestamp(text.trim()).filter(|t| YEARS.contains(&chrono::Datelike::year(t)))
}

fn parse_any_timestamp(text: &str) -> Option<NaiveDateTime> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc).naive_utc());
    }
    [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
    .or_else(|| {
        chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    })
}

/// The user `?user_id=` names: the caller when absent (or their own id);
/// another user only for a superuser (403 otherwise, 404 for nobody), so
/// a leaked key of anyone can be found and stopped.
async fn key_owner(
    state: &AppState,
    principal: &Principal,
    owner: KeyOwner,
) -> Result<String, AppError> {
    let Some(text) = owner.user_id.filter(|t| !t.trim().is_empty()) else {
        return Ok(principal.user.id.clone());
    };
    let id = Uuid::parse_str(text.trim())
        .map_err(|_| AppError::unprocessable("user_id must be a user's id (a UUID)"))?
        .to_string();
    if id == principal.user.id {
        return Ok(id);
    }
    principal.require_superuser()?;
    let lookup = id.clone();
    db::run(&state.pool, move |conn| {
        crate::users::store::find_by_id(conn, &lookup)
    })
    .await?
    .ok_or_else(|| AppError::not_found(USER_NOT_FOUND))?;
    Ok(id)
}

#[utoipa::path(get, path = "/api/v1/api_key", tag = "api keys", params(KeyOwner),
    responses((status = 200, description = "The keys, masked, with their usage", body = KeyList)), security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = [])))]
async fn list_keys(
    state: web::Data<AppState>,
    usage: web::Data<UsageRecorder>,
    principal: Principal,
    owner: web::Query<KeyOwner>,
) -> Result<HttpResponse, AppError> {
    let user_id = key_owner(&state, &principal, owner.into_inner()).await?;
    // Exact usage without a write: the stored counts plus the pending
    // ones (this very request's included), read with no flush between.
    let _no_flush = usage.hold_flushes().await;
    let owner_id = user_id.clone();
    let keys = db::run(&state.pool, move |conn| {
        store::list_for_user(conn, &user_id)
    })
    .await?;
    let api_keys: Vec<ApiKeyView> = keys
        .into_iter()
        .map(|key| {
            let pending = usage.pending(&key.id);
            let mut view = ApiKeyView::from(key);
            view.total_uses += pending.uses;
            if let Some(last_used) = pending.last_used.map(|t| t.and_utc()) {
                if view.last_used_at.is_none_or(|stored| stored < last_used) {
                    view.last_used_at = Some(last_used);
                    view.last_used_from = pending.last_used_from.map(|ip| ip.to_string());
                }
            }
            view
        })
        .collect();
    Ok(HttpResponse::Ok().json(KeyList {
        total_count: api_keys.len(),
        user_id: owner_id,
        api_keys,
    }))
}

/// An empty body is accepted like `{}` (Langflow creates an unnamed key).
#[utoipa::path(post, path = "/api/v1/api_key", tag = "api keys",
    request_body(content = Option<CreateKeyRequest>, description = "Read as JSON whatever the content type; empty counts as `{}`"),
    responses((status = 200, description = "The new key, in full this one time", body = ApiKeyView)), security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = [])))]
async fn create_key(
    state: web::Data<AppState>,
    principal: Principal,
    origin: Origin,
    LenientJson(request): LenientJson<CreateKeyRequest>,
) -> Result<HttpResponse, AppError> {
    let name = check_name(request.name)?;
    let expires_at = match request
        .expires_at
        .as_deref()
        .filter(|t| !t.trim().is_empty())
    {
        None => None,
        Some(text) => {
            let at = parse_timestamp(text).ok_or_else(|| {
                AppError::unprocessable(
                    "expires_at must be an ISO 8601 date-time in the years 1970 to 9999, e.g. 2030-01-31T00:00:00Z",
                )
            })?;
            if at <= Utc::now().naive_utc() {
                return Err(AppError::unprocessable("expires_at must be in the future"));
            }
            Some(db::truncate_to_micros(at))
        }
    };
    let flow_id = match request.flow_id.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(id) => Some(
            Uuid::parse_str(id)
                .map(|u| u.to_string())
                .map_err(|_| AppError::unprocessable("flow_id must be a flow's id (a UUID)"))?,
        ),
    };
    let scopes = key_scopes(&principal, request.scopes, flow_id.is_some())?;
    let allowed_ips = request.allowed_ips.map(parse_allowed_ips).transpose()?;
    let rate_limit = match request.rate_limit {
        None => None,
        Some(value) => RateLimit::parse(value)?,
    };
    check_no_escalation(&principal, scopes, allowed_ips.as_deref(), rate_limit)?;
    let scopes = scopes.to_stored();
    let plain = PlainKey::generate()?;
    let digest = plain.digest();
    let key_hash = digest.to_hash();
    let display_prefix = token::display_prefix(&plain);
    let user_id = principal.user.id.clone();
    let entry = Entry::new(Action::KeyCreate, &origin).by(&principal);
    let created = db::run(&state.pool, move |conn| {
        audit::within(conn, |conn| {
            let created = store::insert(
                conn,
                store::NewKey {
                    user_id: &user_id,
                    name: name.as_deref(),
                    key_hash: key_hash.as_str(),
                    display_prefix: &display_prefix,
                    expires_at,
                    flow_id: flow_id.as_deref(),
                    scopes: scopes.as_deref(),
                    allowed_ips: allowed_ips.as_deref(),
                    rate_limit: rate_limit.map(|limit| (limit.requests, limit.per_seconds)),
                },
            )?;
            let entries = created
                .as_ref()
                .map(|key| created_entry(entry, key))
                .into_iter()
                .collect();
            Ok((created, entries))
        })
    })
    .await?
    .ok_or_else(|| AppError::not_found(BOUND_FLOW_NOT_FOUND))?;
    state.bus.publish(Event::KeyCreated(digest.fingerprint()));
    let mut view = ApiKeyView::from(created);
    view.api_key = plain.into_string();
    Ok(routing::no_store_json(view))
}

/// A `key.create` entry completed with the new key: its id, name, scopes,
/// addresses, rate limit, flow binding and expiry (never its text or hash).
pub fn created_entry(entry: Entry, key: &store::ApiKey) -> Entry {
    entry
        .owner(&*key.user_id)
        .target(&*key.id)
        .with("name", key.name.clone())
        .with("scopes", Scopes::from_stored(key.scopes.as_deref()).names())
        .with("allowed_ips", key.allowed_ips.clone())
        .with("flow_id", key.flow_id.clone())
        .with(
            "rate_limit",
            RateLimit::from_stored(key.rate_limit_requests, key.rate_limit_seconds)
                .map(RateLimit::to_json),
        )
        .with("expires_at", key.expires_at.map(audit::entry::timestamp))
}

#[utoipa::path(patch, path = "/api/v1/api_key/{id}", tag = "api keys", params(("id" = String, Path, format = "uuid")),
    request_body = UpdateKeyRequest, responses((status = 200, description = "The key, masked", body = ApiKeyView)), security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = [])))]
async fn update_key(
    state: web::Data<AppState>,
    origin: Origin,
    key: ById,
    web::Json(request): web::Json<UpdateKeyRequest>,
) -> Result<HttpResponse, AppError> {
    let name = request.name.map(check_name).transpose()?;
    let (user_id, id) = (key.user_id(), key.id.clone());
    let mut changes = store::KeyChanges {
        name,
        is_active: request.is_active,
        ..Default::default()
    };
    let rate_limit = match request.rate_limit {
        None => None,
        Some(value) => Some(value.map(RateLimit::parse).transpose()?.flatten()),
    };
    if request.scopes.is_some() || request.allowed_ips.is_some() || rate_limit.is_some() {
        let current = db::run(&state.pool, {
            let (user_id, id) = (user_id.clone(), id.clone());
            move |conn| store::find_for_user(conn, &user_id, &id)
        })
        .await?
        .ok_or_else(|| AppError::not_found(KEY_NOT_FOUND))?;
        let scopes = match request.scopes {
            None => Scopes::from_stored(current.scopes.as_deref()),
            Some(list) => key_scopes(&key.principal, list, current.flow_id.is_some())?,
        };
        let allowed_ips = match request.allowed_ips {
            None => current.allowed_ips,
            Some(list) => list.map(parse_allowed_ips).transpose()?,
        };
        let rate_limit = rate_limit.unwrap_or_else(|| {
            RateLimit::from_stored(current.rate_limit_requests, current.rate_limit_seconds)
        });
        check_no_escalation(&key.principal, scopes, allowed_ips.as_deref(), rate_limit)?;
        changes.scopes = Some(scopes.to_stored());
        changes.allowed_ips = Some(allowed_ips);
        changes.rate_limit_requests = Some(rate_limit.map(|l| l.requests));
        changes.rate_limit_seconds = Some(rate_limit.map(|l| l.per_seconds));
    }
    let mut entry = Entry::new(Action::KeyUpdate, &origin)
        .by(&key.principal)
        .target(&*key.id);
    if let Some(name) = &changes.name {
        entry = entry.with("name", name.clone());
    }
    if let Some(is_active) = changes.is_active {
        entry = entry.with("is_active", is_active);
    }
    if let Some(scopes) = &changes.scopes {
        entry = entry.with("scopes", Scopes::from_stored(scopes.as_deref()).names());
    }
    if let Some(allowed_ips) = &changes.allowed_ips {
        entry = entry.with("allowed_ips", allowed_ips.clone());
    }
    if let (Some(requests), Some(per_seconds)) =
        (changes.rate_limit_requests, changes.rate_limit_seconds)
    {
        entry = entry.with(
            "rate_limit",
            RateLimit::from_stored(requests, per_seconds).map(RateLimit::to_json),
        );
    }
    let updated = db::run(&state.pool, move |conn| {
        audit::within(conn, |conn| {
            let updated = store::update_for_user(conn, &user_id, &id, &changes)?;
            let entries = updated.as_ref().map(|_| entry).into_iter().collect();
            Ok((updated, entries))
        })
    })
    .await?
    .ok_or_else(|| AppError::not_found(KEY_NOT_FOUND))?;
    state.bus.publish(Event::KeyChanged(key.id));
    Ok(HttpResponse::Ok().json(ApiKeyView::from(updated)))
}

/// `POST /api/v1/api_key/{id}/rotate`: a new key (shown once) with the
/// old one's name, scopes, addresses, rate limit, flow binding and expiry; the old one
/// keeps working for `grace_seconds` (default a day, at most 30 days, 0:
/// stops now), then is as invalid as any unknown key. The old key's new
/// expiry is on the bus before the answer.
#[utoipa::path(post, path = "/api/v1/api_key/{id}/rotate", tag = "api keys", params(("id" = String, Path, format = "uuid")),
    request_body(content = Option<RotateRequest>, description = "Optional; empty counts as `{}`"),
    responses((status = 200, description = "The new key in full, and when the old one stops", body = RotatedView)), security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = [])))]
async fn rotate_key(
    state: web::Data<AppState>,
    origin: Origin,
    key: ById,
    LenientJson(request): LenientJson<RotateRequest>,
) -> Result<HttpResponse, AppError> {
    let grace = request.grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
    if !(0..=MAX_GRACE_SECONDS).contains(&grace) {
        return Err(AppError::unprocessable(format!(
            "grace_seconds must be 0 to {MAX_GRACE_SECONDS} (30 days)"
        )));
    }
    let old_expires_by = db::truncate_to_micros(db::now() + chrono::Duration::seconds(grace));
    let plain = PlainKey::generate()?;
    let digest = plain.digest();
    let key_hash = digest.to_hash();
    let display_prefix = token::display_prefix(&plain);
    let (user_id, id) = (key.user_id(), key.id.clone());
    let principal = key.principal.clone();
    let entry = Entry::new(Action::KeyRotate, &origin)
        .by(&principal)
        .target(&*key.id)
        .with("grace_seconds", grace);
    let rotated = db::run(&state.pool, move |conn| {
        audit::within(conn, |conn| {
            let rotated = store::rotate(
                conn,
                &user_id,
                &id,
                (key_hash.as_str(), &display_prefix),
                old_expires_by,
                |old| {
                    check_no_escalation(
                        &principal,
                        Scopes::from_stored(old.scopes.as_deref()),
                        old.allowed_ips.as_deref(),
                        RateLimit::from_stored(old.rate_limit_requests, old.rate_limit_seconds),
                    )
                },
            )?;
            let entries = rotated
                .as_ref()
                .map(|rotated| {
                    entry.with("new_key_id", rotated.new_key.id.as_str()).with(
                        "old_key_expires_at",
                        audit::entry::timestamp(rotated.old_key_expires_at),
                    )
                })
                .into_iter()
                .collect();
            Ok((rotated, entries))
        })
    })
    .await?
    .map_err(|refusal| match refusal {
        store::RotateRefusal::NotFound => AppError::not_found(KEY_NOT_FOUND),
        store::RotateRefusal::Unusable => {
            AppError::conflict("Only an active, unexpired key can be rotated")
        }
    })?;
    state.bus.publish(Event::KeyChanged(key.id.clone()));
    state.bus.publish(Event::KeyCreated(digest.fingerprint()));
    let mut view = ApiKeyView::from(rotated.new_key);
    view.api_key = plain.into_string();
    Ok(routing::no_store_json(RotatedView {
        key: view,
        old_key_id: key.id,
        old_key_expires_at: rotated.old_key_expires_at.and_utc(),
    }))
}

/// `?days=`: how many days of usage to show (today included).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct UsageQuery {
    /// 1 to 366; default 30.
    #[serde(default)]
    #[param(value_type = Option<i64>, minimum = 1, maximum = 366)]
    days: Option<String>,
}

const DEFAULT_USAGE_DAYS: i64 = 30;
const MAX_USAGE_DAYS: i64 = 366;
/// Hourly buckets shown: the last two days.
const USAGE_HOURS: i64 = 48;

#[derive(Serialize, utoipa::ToSchema)]
struct DayView {
    day: String,
    requests: i64,
    refused: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
struct HourView {
    hour: String,
    requests: i64,
    refused: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
struct UsageView {
    key_id: String,
    days: Vec<DayView>,
    hours: Vec<HourView>,
}

/// `GET /api/v1/api_key/{id}/usage?days=30`: the key's requests and
/// refusals per UTC day (every day of the range, today last) and per hour
/// for the last 48 hours (this hour last), from the batched counters: what
/// is stored plus what this instance has not written yet, read without
/// writing. The owner's keys; a superuser's, anyone's.
#[utoipa::path(get, path = "/api/v1/api_key/{id}/usage", tag = "api keys", params(("id" = String, Path, format = "uuid"), UsageQuery),
    responses((status = 200, description = "Requests and refusals per day and per hour", body = UsageView)), security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = [])))]
async fn key_usage(
    state: web::Data<AppState>,
    usage: web::Data<UsageRecorder>,
    key: ById,
    query: web::Query<UsageQuery>,
) -> Result<HttpResponse, AppError> {
    let days = match query.into_inner().days.as_deref().map(str::trim) {
        None | Some("") => DEFAULT_USAGE_DAYS,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_USAGE_DAYS).contains(n))
            .ok_or_else(|| {
                AppError::unprocessable(format!(
                    "days must be a whole number from 1 to {MAX_USAGE_DAYS}"
                ))
            })?,
    };
    let now = db::now();
    let today = now.date().and_time(chrono::NaiveTime::MIN);
    let this_hour = today + chrono::Duration::hours(i64::from(chrono::Timelike::hour(&now)));
    let hours_from = this_hour - chrono::Duration::hours(USAGE_HOURS - 1);
    let days_from = today - chrono::Duration::days(days - 1);
    let superuser = key.principal.is_superuser();
    let (user_id, id) = (key.user_id(), key.id.clone());
    // Stored plus pending with no flush between (see `list_keys`).
    let _no_flush = usage.hold_flushes().await;
    let (stored_hours, stored_days) = db::run(&state.pool, move |conn| {
        let found = if superuser {
            store::find_any(conn, &id)?
        } else {
            store::find_for_user(conn, &user_id, &id)?
        };
        match found {
            Some(_) => store::usage_since(conn, &id, hours_from, days_from).map(Some),
            None => Ok(None),
        }
    })
    .await?
    .ok_or_else(|| AppError::not_found(KEY_NOT_FOUND))?;
    let mut hours: std::collections::HashMap<NaiveDateTime, (i64, i64)> = stored_hours
        .into_iter()
        .map(|b| (b.start, (b.requests, b.refused)))
        .collect();
    let mut by_day: std::collections::HashMap<NaiveDateTime, (i64, i64)> = stored_days
        .into_iter()
        .map(|b| (b.start, (b.requests, b.refused)))
        .collect();
    for (hour, requests, refused) in usage.pending(&key.id).hours {
        let start = usage::hour_start(hour);
        for (map, at) in [
            (&mut hours, start),
            (&mut by_day, start.date().and_time(chrono::NaiveTime::MIN)),
        ] {
            let entry = map.entry(at).or_default();
            entry.0 += requests;
            entry.1 += refused;
        }
    }
    let days = (0..days)
        .map(|n| {
            let day = days_from + chrono::Duration::days(n);
            let (requests, refused) = by_day.get(&day).copied().unwrap_or_default();
            DayView {
                day: day.format("%Y-%m-%d").to_string(),
                requests,
                refused,
            }
        })
        .collect();
    let hours = (0..USAGE_HOURS)
        .map(|n| {
            let hour = hours_from + chrono::Duration::hours(n);
            let (requests, refused) = hours.get(&hour).copied().unwrap_or_default();
            HourView {
                hour: hour.format("%Y-%m-%dT%H:00:00Z").to_string(),
                requests,
                refused,
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(UsageView {
        key_id: key.id,
        days,
        hours,
    }))
}

/// The most keys one leaked-key report may carry.
pub const MAX_LEAKED_KEYS: usize = 100;

/// Revokes every stored key among `texts`, whoever owns it (a leaked-key
/// report, which needs no credentials); malformed entries are skipped.
/// Each revocation is logged with its key's id and owner (never the key)
/// and on the bus before the caller answers. The count is for the log
/// only: the reporter is told nothing.
pub async fn revoke_leaked(
    state: &AppState,
    origin: &Origin,
    texts: &[String],
) -> Result<usize, AppError> {
    let mut hashes: Vec<String> = texts
        .iter()
        .map(|text| text.trim())
        .filter(|text| PlainKey::is_well_formed(text))
        .map(|text| {
            crate::token::TokenDigest::of(text)
                .to_hash()
                .as_str()
                .to_string()
        })
        .collect();
    hashes.sort_unstable();
    hashes.dedup();
    if hashes.is_empty() {
        return Ok(0);
    }
    let origin = origin.clone();
    let revoked = db::run(&state.pool, move |conn| {
        audit::within(conn, |conn| {
            let revoked = store::delete_by_hashes(conn, &hashes)?;
            let entries = revoked
                .iter()
                .map(|(key_id, owner)| {
                    Entry::new(Action::KeyRevokeLeaked, &origin)
                        .owner(owner.as_str())
                        .target(key_id.as_str())
                })
                .collect();
            Ok((revoked, entries))
        })
    })
    .await?;
    let count = revoked.len();
    for (key_id, owner) in revoked {
        tracing::warn!(%key_id, %owner, "a key reported as leaked was revoked");
        state.bus.publish(Event::KeyChanged(key_id));
    }
    Ok(count)
}

/// Deletes one key: the caller's own, or for a superuser anyone's (the
/// incident response to a leaked key; logged). Another user's key is a
/// 404 for everyone else, the same as an unknown id.
#[utoipa::path(delete, path = "/api/v1/api_key/{id}", tag = "api keys", params(("id" = String, Path, format = "uuid")),
    responses((status = 200, description = "`{\"detail\": \"API Key deleted\"}`", body = crate::error::ErrorBody)), security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = [])))]
async fn delete_key(
    state: web::Data<AppState>,
    origin: Origin,
    key: ById,
) -> Result<HttpResponse, AppError> {
    let (user_id, id) = (key.user_id(), key.id.clone());
    let superuser = key.principal.is_superuser();
    let entry = Entry::new(Action::KeyRevoke, &origin)
        .by(&key.principal)
        .target(&*key.id);
    let delete = move |conn: &mut DbConnection| {
        audit::within(conn, |conn| {
            if !superuser {
                let deleted = store::delete_for_user(conn, &user_id, &id)?;
                return Ok((deleted, deleted.then_some(entry).into_iter().collect()));
            }
            let owner = store::delete_any(conn, &id)?;
            if let Some(owner) = owner.as_deref().filter(|&owner| owner != user_id) {
                tracing::info!(key_id = %id, owner, by = %user_id, "a superuser revoked another user's key");
            }
            let entries = owner
                .iter()
                .map(|owner| entry.clone().owner(owner.as_str()));
            Ok((owner.is_some(), entries.collect()))
        })
    };
    let event = Event::KeyChanged(key.id);
    state.delete_or_404(delete, KEY_NOT_FOUND, event).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"detail": "API Key deleted"})))
}

/// `DELETE /api/v1/api_key/` with `{"all": true}`: revokes every key of
/// the caller (or, for a superuser, of `?user_id=`) at once, after a leak
/// or a password change (keys survive those). Each revocation is on the
/// bus before the answer. Only with a session: a leaked key must not be
/// able to wipe out its owner's other keys, and the person can always sign
/// in to pull this brake.
#[utoipa::path(delete, path = "/api/v1/api_key", tag = "api keys", params(KeyOwner),
    request_body(content = RevokeAllRequest, description = "Read as JSON whatever the content type"),
    responses((status = 200, description = "How many keys went, and whose", body = RevokedAll)), security(("session_bearer" = []), ("session_cookie" = [])))]
async fn revoke_all(
    state: web::Data<AppState>,
    principal: Principal,
    origin: Origin,
    owner: web::Query<KeyOwner>,
    LenientJson(request): LenientJson<RevokeAllRequest>,
) -> Result<HttpResponse, AppError> {
    if principal.is_api_key() {
        return Err(AppError::forbidden(REVOKE_ALL_NEEDS_SESSION));
    }
    if !request.all {
        return Err(AppError::unprocessable(REVOKE_ALL_UNCONFIRMED));
    }
    let user_id = key_owner(&state, &principal, owner.into_inner()).await?;
    let owner_id = user_id.clone();
    let entry = Entry::new(Action::KeyRevoke, &origin)
        .by(&principal)
        .owner(&*user_id)
        .with("all", true);
    let revoked = db::run(&state.pool, move |conn| {
        audit::within(conn, |conn| {
            let revoked = store::delete_all_for_user(conn, &owner_id)?;
            let entries = revoked
                .iter()
                .map(|id| entry.clone().target(id.as_str()))
                .collect();
            Ok((revoked, entries))
        })
    })
    .await?;
    if user_id != principal.user.id {
        tracing::info!(
            owner = %user_id,
            by = %principal.user.id,
            count = revoked.len(),
            "a superuser revoked all keys of another user"
        );
    }
    let count = revoked.len();
    for id in revoked {
        state.bus.publish(Event::KeyChanged(id));
    }
    Ok(HttpResponse::Ok().json(RevokedAll {
        revoked: count,
        user_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_timestamps_as_utc() {
        let z = parse_timestamp("2030-01-02T03:04:05Z").unwrap();
        assert_eq!(z.to_string(), "2030-01-02 03:04:05");
        let offset = parse_timestamp("2030-01-02T05:04:05+02:00").unwrap();
        assert_eq!(offset, z);
        assert_eq!(parse_timestamp("2030-01-02T03:04:05").unwrap(), z);
        assert!(parse_timestamp("2030-01-02").is_some());
        assert!(parse_timestamp("9999-12-31T23:59:59Z").is_some());
        for out_of_range in [
            "+10000-01-01T00:00:00",
            "10000-01-01",
            "1969-12-31T23:59:59Z",
        ] {
            assert!(parse_timestamp(out_of_range).is_none(), "{out_of_range}");
        }
        assert!(parse_timestamp("next tuesday").is_none());
    }
}
