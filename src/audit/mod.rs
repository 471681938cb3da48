//! The audit log: who did what, when, from where, for the actions listed
//! in [`Action`], and `GET /api/v1/audit` to read it.
//!
//! The domains record their own entries ([`Entry`], [`record`]) in the
//! transaction of the change ([`within`], [`within_serializable`]), so an
//! audited change is never lost and an unaudited change never lands. This
//! module sits below every domain and knows none of them. An entry never
//! holds a key, a password or a secret: the writers put ids, names and
//! counts into `detail`, nothing more.
//!
//! Old entries go after `KEYGATE_AUDIT_RETENTION_DAYS` ([`retention`]).

pub mod entry;
pub mod retention;
pub mod store;

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::db::{self, DbConnection};
use crate::error::AppError;
use crate::identity::Principal;
use crate::routing;
use crate::state::AppState;
pub use entry::{Action, Entry, Origin};

/// Events per page: by default and at most.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// Writes entries on `conn`, in the caller's transaction if there is one.
pub fn record(conn: &mut DbConnection, entries: &[Entry]) -> Result<(), AppError> {
    let at = db::now();
    for entry in entries {
        store::insert(conn, at, entry)?;
    }
    Ok(())
}

/// Runs `work` and writes the entries it returns, in one transaction:
/// both land or neither does.
pub fn within<T>(
    conn: &mut DbConnection,
    work: impl FnOnce(&mut DbConnection) -> Result<(T, Vec<Entry>), AppError>,
) -> Result<T, AppError> {
    db::transaction(conn, |conn| {
        let (value, entries) = work(conn)?;
        record(conn, &entries)?;
        Ok(value)
    })
}

/// [`within`] at PostgreSQL's SERIALIZABLE level, for work that runs a
/// `db::serializable_transaction` of its own (see there).
pub fn within_serializable<T>(
    conn: &mut DbConnection,
    work: impl FnOnce(&mut DbConnection) -> Result<(T, Vec<Entry>), AppError>,
) -> Result<T, AppError> {
    db::serializable_transaction(conn, |conn| {
        let (value, entries) = work(conn)?;
        record(conn, &entries)?;
        Ok(value)
    })
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    routing::resources!(cfg {
        "/audit": get list;
    });
}

/// `GET /api/v1/audit`'s parameters. Unknown ones are refused (a misspelt
/// filter must not widen the answer silently); `x-api-key` is a credential.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Events per page, 1 to 500 (default 50).
    #[serde(default)]
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// The `id` of the last event of the previous page, or an RFC 3339 time.
    #[serde(default)]
    before: Option<String>,
    /// An action (`key.create`) or a class (`key.*`).
    #[serde(default)]
    action: Option<String>,
    /// Events about this key or made with it.
    #[serde(default)]
    #[param(format = "uuid")]
    key_id: Option<String>,
    /// Another user's events (superusers only).
    #[serde(default)]
    #[param(format = "uuid")]
    user_id: Option<String>,
    /// Read by the authentication middleware.
    #[serde(default, rename = "x-api-key")]
    #[param(ignore)]
    #[allow(dead_code)]
    api_key: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct EventView {
    id: String,
    at: DateTime<Utc>,
    action: String,
    user_id: Option<String>,
    actor_user_id: Option<String>,
    actor_key_id: Option<String>,
    target_id: Option<String>,
    address: Option<String>,
    user_agent: Option<String>,
    detail: Value,
}

impl From<store::Event> for EventView {
    fn from(event: store::Event) -> Self {
        EventView {
            detail: serde_json::from_str(&event.detail)
                .unwrap_or_else(|_| Value::Object(Map::new())),
            id: event.id,
            at: event.at.and_utc(),
            action: event.action,
            user_id: event.user_id,
            actor_user_id: event.actor_user_id,
            actor_key_id: event.actor_key_id,
            target_id: event.target_id,
            address: event.address,
            user_agent: event.user_agent,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct EventList {
    events: Vec<EventView>,
}

fn uuid_param(name: &str, text: &str) -> Result<String, AppError> {
    Uuid::parse_str(text.trim())
        .map(|id| id.to_string())
        .map_err(|_| AppError::unprocessable(format!("{name} must be a UUID")))
}

/// `before`: the `id` of the last event of the previous page, or an RFC
/// 3339 time (events strictly earlier).
fn parse_cursor(text: &str) -> Result<store::Cursor, AppError> {
    let text = text.trim();
    if let Ok(id) = Uuid::parse_str(text) {
        return Ok(store::Cursor::Event(id.to_string()));
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| store::Cursor::Time(t.with_timezone(&Utc).naive_utc()))
        .map_err(|_| {
            AppError::unprocessable(
                "before must be an event id (the last id of the previous page) \
                 or an RFC 3339 time such as 2030-01-31T00:00:00Z",
            )
        })
}

/// The caller's own events, newest first; a superuser (with the `admin`
/// scope, for a key) sees everyone's and may narrow them to one
/// `user_id`. Anyone else naming another user is refused (403).
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(ListQuery),
    responses((status = 200, description = "Audit events, newest first", body = EventList)), security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = [])))]
async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    let query = query.into_inner();
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AppError::unprocessable(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let own = principal.user.id.clone();
    let user_id = match query.user_id.as_deref().filter(|t| !t.trim().is_empty()) {
        None if principal.is_superuser() => None,
        None => Some(own),
        Some(text) => {
            let id = uuid_param("user_id", text)?;
            if id != own {
                principal.require_superuser()?;
            }
            Some(id)
        }
    };
    let actions = match query.action.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(Action::matching(text).ok_or_else(|| {
            AppError::unprocessable(format!(
                "Unknown action {text:?}; give an action such as key.create or a class such as key.*"
            ))
        })?),
    };
    let key_id = query
        .key_id
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        .map(|text| uuid_param("key_id", text))
        .transpose()?;
    let before = query
        .before
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        .map(parse_cursor)
        .transpose()?;
    let filter = store::Filter {
        user_id,
        actions,
        key_id,
        before,
        limit,
    };
    let events = db::run(&state.pool, move |conn| store::list(conn, &filter)).await?;
    Ok(HttpResponse::Ok().json(EventList {
        events: events.into_iter().map(EventView::from).collect(),
    }))
}
