//! `sk-` API keys: Langflow-compatible routes under `/api/v1/api_key/`.

pub mod invalidation;
pub mod store;
pub mod token;
pub mod usage;
pub mod verify;

use actix_web::{web, HttpResponse};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::db;
use crate::error::AppError;
use crate::state::AppState;
use token::PlainKey;

pub const MAX_NAME_LEN: usize = 255;
const KEY_NOT_FOUND: &str = "API Key not found";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(["/api_key", "/api_key/"])
            .route(web::get().to(list_keys))
            .route(web::post().to(create_key)),
    )
    .service(
        web::resource(["/api_key/{id}", "/api_key/{id}/"])
            .route(web::delete().to(delete_key))
            .route(web::patch().to(update_key)),
    );
}

/// A key as listed: masked, with its usage.
#[derive(Serialize)]
pub struct ApiKeyView {
    pub id: String,
    pub name: Option<String>,
    pub api_key: String,
    pub user_id: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub total_uses: i64,
    pub is_active: bool,
    pub expires_at: Option<DateTime<Utc>>,
    /// The one flow the key may run; `null` for an ordinary key.
    pub flow_id: Option<String>,
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
            total_uses: key.total_uses,
            is_active: key.is_active,
            expires_at: key.expires_at.map(|t| t.and_utc()),
            flow_id: key.flow_id,
        }
    }
}

#[derive(Serialize)]
struct KeyList {
    total_count: usize,
    user_id: String,
    api_keys: Vec<ApiKeyView>,
}

#[derive(Deserialize)]
struct CreateKeyRequest {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
    /// Binds the new key to one of the caller's flows.
    #[serde(default)]
    flow_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateKeyRequest {
    #[serde(default, deserialize_with = "double_option")]
    name: Option<Option<String>>,
    #[serde(default)]
    is_active: Option<bool>,
}

/// Distinguishes an absent field (`None`) from an explicit `null`
/// (`Some(None)`).
fn double_option<'de, D>(deserializer: D) -> Result<Option<Option<String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<String>::deserialize(deserializer).map(Some)
}

fn check_name(name: Option<String>) -> Result<Option<String>, AppError> {
    let name = name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
    if let Some(n) = &name {
        if n.chars().count() > MAX_NAME_LEN {
            return Err(AppError::unprocessable(format!(
                "name must be at most {MAX_NAME_LEN} characters"
            )));
        }
        if n.chars().any(char::is_control) {
            return Err(AppError::unprocessable(
                "name must not contain control characters",
            ));
        }
    }
    Ok(name)
}

/// Accepts RFC 3339 (`2030-01-01T00:00:00Z`, with an offset) or a naive
/// ISO date-time taken as UTC, as Langflow's clients send it.
pub fn parse_timestamp(text: &str) -> Option<NaiveDateTime> {
    let text = text.trim();
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

fn parse_key_id(id: &str) -> Result<String, AppError> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| AppError::unprocessable("Invalid API key id: expected a UUID"))
}

async fn list_keys(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<HttpResponse, AppError> {
    // Pending counts (including this very request's) are written first so
    // the list shows exact usage.
    state.usage.flush().await?;
    let user_id = principal.user.id.clone();
    let keys = db::run(&state.pool, move |conn| {
        store::list_for_user(conn, &user_id).map_err(AppError::from)
    })
    .await?;
    Ok(HttpResponse::Ok().json(KeyList {
        total_count: keys.len(),
        user_id: principal.user.id,
        api_keys: keys.into_iter().map(ApiKeyView::from).collect(),
    }))
}

async fn create_key(
    state: web::Data<AppState>,
    principal: Principal,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    // An empty body is accepted like `{}` (Langflow creates an unnamed key).
    let request: CreateKeyRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CreateKeyRequest {
            name: None,
            expires_at: None,
            flow_id: None,
        }
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| AppError::unprocessable(format!("Invalid JSON body: {e}")))?
    };
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
                    "expires_at must be an ISO 8601 date-time, e.g. 2030-01-31T00:00:00Z",
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
            uuid::Uuid::parse_str(id)
                .map(|u| u.to_string())
                .map_err(|_| AppError::unprocessable("flow_id must be a flow's id (a UUID)"))?,
        ),
    };
    let plain = PlainKey::generate()
        .map_err(|e| AppError::internal(format_args!("OS random source failed: {e}")))?;
    let key_hash = plain.hash();
    let display_prefix = plain.display_prefix();
    let user_id = principal.user.id.clone();
    let created = db::run(&state.pool, move |conn| {
        store::insert(
            conn,
            store::NewKey {
                user_id: &user_id,
                name: name.as_deref(),
                key_hash: key_hash.as_str(),
                display_prefix: &display_prefix,
                expires_at,
                flow_id: flow_id.as_deref(),
            },
        )
        .map_err(|e| match e {
            // The flow was deleted between the check and the insert.
            diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::ForeignKeyViolation,
                _,
            ) => AppError::not_found(crate::flows::FLOW_NOT_FOUND),
            other => AppError::from(other),
        })?
        .ok_or_else(|| AppError::not_found(crate::flows::FLOW_NOT_FOUND))
    })
    .await?;
    state.keys.key_created();
    let mut view = ApiKeyView::from(created);
    view.api_key = plain.into_string();
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(view))
}

async fn update_key(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
    body: web::Json<UpdateKeyRequest>,
) -> Result<HttpResponse, AppError> {
    let id = parse_key_id(&path)?;
    let request = body.into_inner();
    let changes = store::KeyChanges {
        name: match request.name {
            Some(name) => Some(check_name(name)?),
            None => None,
        },
        is_active: request.is_active,
    };
    let user_id = principal.user.id.clone();
    let key_id = id.clone();
    let updated = db::run(&state.pool, move |conn| {
        store::update_for_user(conn, &user_id, &key_id, &changes).map_err(AppError::from)
    })
    .await?
    .ok_or_else(|| AppError::not_found(KEY_NOT_FOUND))?;
    state.keys.forget_key(&id);
    Ok(HttpResponse::Ok().json(ApiKeyView::from(updated)))
}

async fn delete_key(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = parse_key_id(&path)?;
    let user_id = principal.user.id.clone();
    let key_id = id.clone();
    let deleted = db::run(&state.pool, move |conn| {
        store::delete_for_user(conn, &user_id, &key_id).map_err(AppError::from)
    })
    .await?;
    if !deleted {
        return Err(AppError::not_found(KEY_NOT_FOUND));
    }
    state.keys.forget_key(&id);
    Ok(HttpResponse::Ok().json(serde_json::json!({"detail": "API Key deleted"})))
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
        assert!(parse_timestamp("next tuesday").is_none());
    }
}
