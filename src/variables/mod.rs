//! Langflow-style global variables under `/api/v1/variables/`: per user,
//! names unique per user, type `Credential` (value encrypted with
//! `state.secrets`, never returned) or `Generic` (value returned as stored).

pub mod store;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::audit::{self, Action, Entry, Origin};
use crate::bus::Event;
use crate::db::{self, DbConnection};
use crate::error::AppError;
use crate::identity::{ById, Principal};
use crate::routing;
use crate::state::AppState;
use crate::validate;
use store::{CREDENTIAL, GENERIC};

pub const MAX_NAME_LEN: usize = 255;
pub const MAX_VALUE_LEN: usize = 65536;
pub const MAX_DEFAULT_FIELDS: usize = 64;
const NOT_FOUND: &str = "Variable not found";

pub fn routes(cfg: &mut web::ServiceConfig) {
    routing::resources!(cfg {
        "/variables": get list, post create;
        "/variables/{id}" ["variable"]: patch update, delete remove;
    });
}

/// A variable as its owner sees it (Langflow's `VariableRead`, plus
/// `has_value` as Langflow 1.13 sends it).
#[derive(Serialize, utoipa::ToSchema)]
struct VariableView {
    id: String,
    name: String,
    #[serde(rename = "type")]
    var_type: String,
    /// `null` for a Credential.
    value: Option<String>,
    has_value: bool,
    default_fields: Vec<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<store::Variable> for VariableView {
    fn from(v: store::Variable) -> Self {
        let credential = v.var_type == CREDENTIAL;
        VariableView {
            has_value: !v.value.is_empty(),
            value: if credential { None } else { Some(v.value) },
            default_fields: serde_json::from_str(&v.default_fields).unwrap_or_default(),
            id: v.id,
            name: v.name,
            var_type: v.var_type,
            created_at: v.created_at.and_utc(),
            updated_at: v.updated_at.and_utc(),
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = CreateVariableRequest)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default, rename = "type")]
    var_type: Option<String>,
    #[serde(default)]
    default_fields: Option<Vec<String>>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = UpdateVariableRequest)]
#[serde(deny_unknown_fields)]
struct UpdateRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default, rename = "type")]
    var_type: Option<String>,
    #[serde(default)]
    default_fields: Option<Vec<String>>,
}

fn check_name(name: Option<String>) -> Result<String, AppError> {
    validate::required_text("name", name, MAX_NAME_LEN)
}

fn check_value(value: Option<String>) -> Result<String, AppError> {
    let value = value.unwrap_or_default();
    if value.trim().is_empty() {
        return Err(AppError::unprocessable(
            "value is required and must not be empty",
        ));
    }
    if value.chars().count() > MAX_VALUE_LEN {
        return Err(AppError::unprocessable(format!(
            "value must be at most {MAX_VALUE_LEN} characters"
        )));
    }
    Ok(value)
}

/// `Credential` or `Generic` (any case); absent means Credential, so a
/// value is never exposed by accident.
fn check_type(var_type: Option<String>) -> Result<&'static str, AppError> {
    match var_type.as_deref().map(str::trim) {
        None => Ok(CREDENTIAL),
        Some(t) if t.eq_ignore_ascii_case(CREDENTIAL) => Ok(CREDENTIAL),
        Some(t) if t.eq_ignore_ascii_case(GENERIC) => Ok(GENERIC),
        Some(t) => Err(AppError::unprocessable(format!(
            "type {t:?} is not valid: expected \"Credential\" or \"Generic\""
        ))),
    }
}

fn check_default_fields(fields: Option<Vec<String>>) -> Result<String, AppError> {
    let fields = fields.unwrap_or_default();
    if fields.len() > MAX_DEFAULT_FIELDS || fields.iter().any(|f| f.chars().count() > MAX_NAME_LEN)
    {
        return Err(AppError::unprocessable(format!(
            "default_fields takes at most {MAX_DEFAULT_FIELDS} names of at most {MAX_NAME_LEN} characters"
        )));
    }
    serde_json::to_string(&fields).map_err(AppError::internal)
}

/// The value as stored: encrypted for a Credential.
fn stored_value(state: &AppState, var_type: &str, value: &str) -> Result<String, AppError> {
    if var_type == CREDENTIAL {
        state.secrets.encrypt(value)
    } else {
        Ok(value.to_string())
    }
}

#[utoipa::path(post, path = "/api/v1/variables", tag = "variables", request_body = CreateRequest,
    responses((status = 201, description = "The new variable", body = VariableView)), security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = [])))]
async fn create(
    state: web::Data<AppState>,
    principal: Principal,
    origin: Origin,
    web::Json(request): web::Json<CreateRequest>,
) -> Result<HttpResponse, AppError> {
    let name = check_name(request.name)?;
    let var_type = check_type(request.var_type)?;
    let value = stored_value(&state, var_type, &check_value(request.value)?)?;
    let default_fields = check_default_fields(request.default_fields)?;
    let user_id = principal.user.id.clone();
    let entry = Entry::new(Action::VariableCreate, &origin).by(&principal);
    let created = db::run(&state.pool, move |conn| {
        audit::within(conn, |conn| {
            let created = store::insert(
                conn,
                store::NewVariable {
                    user_id: &user_id,
                    name: &name,
                    var_type,
                    value: &value,
                    default_fields: &default_fields,
                },
            )?;
            let entry = described(entry, &created);
            Ok((created, vec![entry]))
        })
    })
    .await?;
    state
        .bus
        .publish(Event::SecretsChanged(principal.user.id.clone()));
    Ok(HttpResponse::Created().json(VariableView::from(created)))
}

#[utoipa::path(get, path = "/api/v1/variables", tag = "variables",
    responses((status = 200, description = "The caller's variables, by name", body = Vec<VariableView>)), security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = [])))]
async fn list(state: web::Data<AppState>, principal: Principal) -> Result<HttpResponse, AppError> {
    let user_id = principal.user.id.clone();
    let all = db::run(&state.pool, move |conn| {
        store::list_for_user(conn, &user_id)
    })
    .await?;
    Ok(HttpResponse::Ok().json(all.into_iter().map(VariableView::from).collect::<Vec<_>>()))
}

/// An entry completed with the variable's id, name and type (never its
/// value, which may be a secret even in a Generic variable).
fn described(entry: Entry, variable: &store::Variable) -> Entry {
    entry
        .target(&*variable.id)
        .with("name", variable.name.as_str())
        .with("type", variable.var_type.as_str())
}

#[utoipa::path(patch, path = "/api/v1/variables/{id}", tag = "variables", params(("id" = String, Path, format = "uuid")), request_body = UpdateRequest,
    responses((status = 200, description = "The updated variable", body = VariableView)), security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = [])))]
async fn update(
    state: web::Data<AppState>,
    origin: Origin,
    variable: ById,
    web::Json(request): web::Json<UpdateRequest>,
) -> Result<HttpResponse, AppError> {
    if let Some(body_id) = request.id.as_deref() {
        let body_id = Uuid::parse_str(body_id)
            .map_err(|_| AppError::unprocessable("Invalid variable id: expected a UUID"))?;
        if body_id.to_string() != variable.id {
            return Err(AppError::unprocessable(
                "the id in the body does not match the id in the path",
            ));
        }
    }
    let (user_id, id) = (variable.user_id(), variable.id);
    let (lookup_user, lookup_id) = (user_id.clone(), id.clone());
    let current = db::run(&state.pool, move |conn| {
        store::find_for_user(conn, &lookup_user, &lookup_id)
    })
    .await?
    .ok_or_else(|| AppError::not_found(NOT_FOUND))?;

    let name = match request.name {
        Some(name) => Some(check_name(Some(name))?),
        None => None,
    };
    let new_type = match request.var_type {
        Some(t) => check_type(Some(t))?,
        None if current.var_type == CREDENTIAL => CREDENTIAL,
        None => GENERIC,
    };
    let type_changes = new_type != current.var_type;
    let value = match request.value {
        Some(value) => Some(stored_value(&state, new_type, &check_value(Some(value))?)?),
        None if type_changes => {
            return Err(AppError::unprocessable(
                "changing a variable's type needs a new value",
            ))
        }
        None => None,
    };
    let changes = store::VariableChanges {
        name: name.clone(),
        var_type: type_changes.then(|| new_type.to_string()),
        value,
        default_fields: match request.default_fields {
            Some(fields) => Some(check_default_fields(Some(fields))?),
            None => None,
        },
        updated_at: None,
    };
    let changed: Vec<&str> = [
        ("name", changes.name.is_some()),
        ("type", changes.var_type.is_some()),
        ("value", changes.value.is_some()),
        ("default_fields", changes.default_fields.is_some()),
    ]
    .into_iter()
    .filter_map(|(field, is_changed)| is_changed.then_some(field))
    .collect();
    let entry = Entry::new(Action::VariableUpdate, &origin)
        .by(&variable.principal)
        .with("changed", changed);
    let updated = db::run(&state.pool, move |conn| {
        audit::within(conn, |conn| {
            let updated = store::update_for_user(conn, &user_id, &id, changes)?;
            let entries = updated
                .as_ref()
                .map(|updated| described(entry, updated))
                .into_iter()
                .collect();
            Ok((updated, entries))
        })
    })
    .await?
    .ok_or_else(|| AppError::not_found(NOT_FOUND))?;
    state
        .bus
        .publish(Event::SecretsChanged(variable.principal.user.id.clone()));
    Ok(HttpResponse::Ok().json(VariableView::from(updated)))
}

#[utoipa::path(delete, path = "/api/v1/variables/{id}", tag = "variables", params(("id" = String, Path, format = "uuid")),
    responses((status = 204, description = "Deleted; no body")), security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = [])))]
async fn remove(
    state: web::Data<AppState>,
    origin: Origin,
    variable: ById,
) -> Result<HttpResponse, AppError> {
    let (user_id, id) = (variable.user_id(), variable.id);
    let event = Event::SecretsChanged(user_id.clone());
    let entry = Entry::new(Action::VariableDelete, &origin).by(&variable.principal);
    let delete = move |conn: &mut DbConnection| {
        audit::within(conn, |conn| {
            let Some(stored) = store::find_for_user(conn, &user_id, &id)? else {
                return Ok((false, Vec::new()));
            };
            let deleted = store::delete_for_user(conn, &user_id, &id)?;
            Ok((deleted, vec![described(entry, &stored)]))
        })
    };
    state.delete_or_404(delete, NOT_FOUND, event).await?;
    Ok(HttpResponse::build(StatusCode::NO_CONTENT).finish())
}
