//! Flows: each user's own, on Langflow's routes under `/api/v1/flows/`.
//! A flow is a name, optional unique endpoint name, JSON `data` stored and
//! returned as the exact text given, an access mode, and the upstream the
//! gateway forwards runs to (with which stored credential to inject, and
//! how).

pub mod cache;
pub mod langflow;
pub mod store;
pub mod upstream;
pub mod warnings;

pub use upstream::{
    CredentialRef, Injection, LangflowTarget, SecretSource, SecretSourceRef, Upstream,
};

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::audit::{self, Action, Entry, Origin};
use crate::bus::Event;
use crate::db;
use crate::error::AppError;
use crate::identity::{ById, Principal};
use crate::routing;
use crate::state::AppState;
use crate::validate::{self, LenientJson};

pub const FLOW_NOT_FOUND: &str = "Flow not found";
pub use store::{ACCESS_PRIVATE, ACCESS_PUBLIC};
pub const MAX_NAME_LEN: usize = 255;
pub const MAX_DESCRIPTION_LEN: usize = 10_000;
pub const MAX_ENDPOINT_NAME_LEN: usize = 128;
const DEFAULT_PAGE_SIZE: i64 = 50;
const MAX_PAGE_SIZE: i64 = 1000;

/// The flow domain's long-lived part: the cache of runnable flows,
/// subscribed to the bus.
pub fn services(state: &AppState) -> std::sync::Arc<cache::FlowCache> {
    let flows = std::sync::Arc::new(cache::FlowCache::new(
        state.pool.clone(),
        state.config.key_cache_size,
        state.config.key_cache_ttl,
        state.bus.current(),
        &state.metrics,
    ));
    state.bus.subscribe(&flows);
    flows
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    routing::resources!(cfg {
        "/flows": get list_flows, post create_flow;
        "/flows/{id}" ["flow"]: get get_flow, patch update_flow, put upsert_flow, delete delete_flow;
    });
}

/// A flow as the API shows it: keygate's fields and Langflow's `FlowRead`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct FlowView {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub endpoint_name: Option<String>,
    /// The JSON text as it was given, returned byte for byte.
    #[schema(value_type = Option<Value>)]
    pub data: Option<Box<RawValue>>,
    pub upstream: Option<Upstream>,
    pub access: String,
    /// `access` as Langflow spells it: `PRIVATE` or `PUBLIC`.
    pub access_type: &'static str,
    pub user_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub is_component: bool,
    pub folder_id: Option<String>,
    pub icon: Option<String>,
    pub icon_bg_color: Option<String>,
    pub gradient: Option<String>,
    pub tags: Option<Vec<String>>,
    pub locked: bool,
    pub mcp_enabled: bool,
    pub webhook: bool,
}

/// A flow as Langflow's `header_flows=true` list shows it: no data, no
/// upstream.
#[derive(Serialize, utoipa::ToSchema)]
struct FlowHeader {
    id: String,
    name: String,
    description: Option<String>,
    endpoint_name: Option<String>,
    folder_id: Option<String>,
    is_component: bool,
    access_type: &'static str,
    tags: Option<Vec<String>>,
    mcp_enabled: bool,
}

impl From<FlowView> for FlowHeader {
    fn from(view: FlowView) -> Self {
        FlowHeader {
            id: view.id,
            name: view.name,
            description: view.description,
            endpoint_name: view.endpoint_name,
            folder_id: view.folder_id,
            is_component: view.is_component,
            access_type: view.access_type,
            tags: view.tags,
            mcp_enabled: view.mcp_enabled,
        }
    }
}

impl TryFrom<store::Flow> for FlowView {
    type Error = AppError;

    fn try_from(flow: store::Flow) -> Result<Self, AppError> {
        let data = flow
            .data
            .map(|text| {
                RawValue::from_string(text).map_err(|e| {
                    AppError::internal(format_args!("stored flow data unreadable: {e}"))
                })
            })
            .transpose()?;
        Ok(FlowView {
            upstream: Upstream::from_column(flow.upstream.as_deref())?,
            tags: langflow::tags_from_column(flow.tags.as_deref())?,
            access_type: langflow::access_type(&flow.access),
            id: flow.id,
            name: flow.name,
            description: flow.description,
            endpoint_name: flow.endpoint_name,
            data,
            access: flow.access,
            user_id: flow.user_id,
            created_at: flow.created_at.and_utc(),
            updated_at: flow.updated_at.and_utc(),
            is_component: flow.is_component,
            folder_id: flow.folder_id,
            icon: flow.icon,
            icon_bg_color: flow.icon_bg_color,
            gradient: flow.gradient,
            locked: flow.locked,
            mcp_enabled: flow.mcp_enabled,
            webhook: flow.webhook,
        })
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateFlowRequest {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    endpoint_name: Option<String>,
    /// Kept as the exact JSON text given; `null` means none.
    #[serde(default)]
    #[schema(value_type = Option<Value>)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    upstream: Option<Upstream>,
    #[serde(default)]
    access: Option<String>,
    // Langflow's `FlowCreate` (see `langflow`); `null` means the default.
    #[serde(default)]
    access_type: Option<String>,
    #[serde(default)]
    is_component: Option<bool>,
    #[serde(default)]
    folder_id: Option<String>,
    #[serde(default)]
    icon: Option<String>,
    #[serde(default)]
    icon_bg_color: Option<String>,
    #[serde(default)]
    gradient: Option<String>,
    #[serde(default, deserialize_with = "langflow::deserialize_tags")]
    tags: Option<Vec<String>>,
    #[serde(default)]
    locked: Option<bool>,
    #[serde(default)]
    mcp_enabled: Option<bool>,
    #[serde(default)]
    webhook: Option<bool>,
    // Accepted and ignored: the owner and times are keygate's own, and the
    // rest of Langflow's model has no meaning here.
    #[serde(default, rename = "updated_at")]
    #[schema(value_type = Option<Value>)]
    _updated_at: IgnoredAny,
    #[serde(default, rename = "user_id")]
    #[schema(value_type = Option<Value>)]
    _user_id: IgnoredAny,
    #[serde(default, rename = "fs_path")]
    #[schema(value_type = Option<Value>)]
    _fs_path: IgnoredAny,
    #[serde(default, rename = "action_name")]
    #[schema(value_type = Option<Value>)]
    _action_name: IgnoredAny,
    #[serde(default, rename = "action_description")]
    #[schema(value_type = Option<Value>)]
    _action_description: IgnoredAny,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateFlowRequest {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "validate::double_option")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "validate::double_option")]
    endpoint_name: Option<Option<String>>,
    /// `null` clears the data.
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<Value>)]
    data: Option<Option<Box<RawValue>>>,
    #[serde(default, deserialize_with = "validate::double_option")]
    upstream: Option<Option<Upstream>>,
    #[serde(default)]
    access: Option<String>,
    // Langflow's `FlowUpdate` and the other fields of its `FlowRead`: a
    // flag given as `null` is left as it is, a text or list is cleared.
    #[serde(default)]
    access_type: Option<String>,
    #[serde(default)]
    is_component: Option<bool>,
    #[serde(default, deserialize_with = "validate::double_option")]
    folder_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "validate::double_option")]
    icon: Option<Option<String>>,
    #[serde(default, deserialize_with = "validate::double_option")]
    icon_bg_color: Option<Option<String>>,
    #[serde(default, deserialize_with = "validate::double_option")]
    gradient: Option<Option<String>>,
    #[serde(default, deserialize_with = "langflow::deserialize_tag_change")]
    tags: Option<Option<Vec<String>>>,
    #[serde(default)]
    locked: Option<bool>,
    #[serde(default)]
    mcp_enabled: Option<bool>,
    #[serde(default)]
    webhook: Option<bool>,
    // Accepted and ignored: the rest of Langflow's `FlowUpdate` has no
    // meaning here. (The owner is never changed: `user_id` is refused.)
    #[serde(default, rename = "fs_path")]
    #[schema(value_type = Option<Value>)]
    _fs_path: IgnoredAny,
    #[serde(default, rename = "action_name")]
    #[schema(value_type = Option<Value>)]
    _action_name: IgnoredAny,
    #[serde(default, rename = "action_description")]
    #[schema(value_type = Option<Value>)]
    _action_description: IgnoredAny,
}

/// Langflow's list parameters. `remove_example_flows` is accepted and
/// changes nothing: keygate has no example flows.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    #[serde(default)]
    get_all: Option<bool>,
    #[serde(default)]
    page: Option<i64>,
    #[serde(default)]
    size: Option<i64>,
    #[serde(default)]
    folder_id: Option<String>,
    #[serde(default)]
    components_only: Option<bool>,
    #[serde(default)]
    header_flows: Option<bool>,
    #[serde(default, rename = "remove_example_flows")]
    _remove_example_flows: Option<bool>,
}

/// What `GET /api/v1/flows/` answers: the flows (each with every field
/// unless `header_flows=true`), or one page of them.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // Describes the answer; the handler builds its parts.
enum FlowListing {
    Flows(Vec<FlowHeader>),
    Page(FlowPage),
}

#[derive(Serialize, utoipa::ToSchema)]
struct FlowPage {
    items: Vec<FlowView>,
    total: i64,
    page: i64,
    size: i64,
    pages: i64,
}

fn check_name(name: &str) -> Result<String, AppError> {
    validate::required_text("name", Some(name.to_string()), MAX_NAME_LEN)
}

fn check_description(description: Option<String>) -> Result<Option<String>, AppError> {
    match description {
        Some(d) if d.chars().count() > MAX_DESCRIPTION_LEN => Err(AppError::unprocessable(
            format!("description must be at most {MAX_DESCRIPTION_LEN} characters"),
        )),
        other => Ok(other),
    }
}

/// Endpoint names are URL-safe (`A-Z a-z 0-9 - _`), and never a UUID so a
/// run's identifier is never ambiguous. An empty name means none.
pub fn check_endpoint_name(name: Option<String>) -> Result<Option<String>, AppError> {
    let Some(name) = name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if name.len() > MAX_ENDPOINT_NAME_LEN
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(AppError::unprocessable(format!(
            "endpoint_name must be 1 to {MAX_ENDPOINT_NAME_LEN} characters of letters, digits, '-' and '_'"
        )));
    }
    if uuid::Uuid::parse_str(&name).is_ok() {
        return Err(AppError::unprocessable(
            "endpoint_name must not be a UUID (runs take a flow id or an endpoint name)",
        ));
    }
    Ok(Some(name))
}

fn check_access(access: &str) -> Result<String, AppError> {
    match access.trim().to_ascii_lowercase().as_str() {
        ACCESS_PRIVATE => Ok(ACCESS_PRIVATE.into()),
        ACCESS_PUBLIC => Ok(ACCESS_PUBLIC.into()),
        _ => Err(AppError::unprocessable(
            "access must be \"private\" or \"public\"",
        )),
    }
}

/// Validates an upstream, applies the SSRF rule to its URL as far as it
/// can be checked without resolving names (a literal private address is
/// refused now; names are checked again, resolved, at every run), and
/// gives the JSON to store.
fn store_upstream(state: &AppState, upstream: Upstream) -> Result<String, AppError> {
    let upstream = upstream.validated()?;
    if let Some((field, url)) = upstream.checked_url() {
        state.outbound.check_url(url).map_err(|e| {
            AppError::unprocessable(format!("{field} is not allowed: {}", e.detail()))
        })?;
    }
    serde_json::to_string(&upstream).map_err(AppError::internal)
}

#[utoipa::path(post, path = "/api/v1/flows", tag = "flows",
    request_body(content = CreateFlowRequest, description = "Read as JSON whatever the content type"),
    responses((status = 201, description = "The new flow and what it still lacks", body = SavedFlow)), security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = [])))]
async fn create_flow(
    state: web::Data<AppState>,
    principal: Principal,
    origin: Origin,
    body: LenientJson<CreateFlowRequest>,
) -> Result<HttpResponse, AppError> {
    let id = uuid::Uuid::new_v4().to_string();
    let new = new_flow(&state, &principal, body.0, id)?;
    let entry = described(Entry::new(Action::FlowCreate, &origin).by(&principal), &new);
    let flow = db::run(&state.pool, move |conn| {
        audit::within_serializable(conn, |conn| Ok((store::insert(conn, new)?, vec![entry])))
    })
    .await?;
    written(&state, StatusCode::CREATED, flow).await
}

/// An entry completed with the flow's id, name, endpoint name and access
/// (never its data or upstream, which may name secrets).
fn described(entry: Entry, flow: &store::Flow) -> Entry {
    entry
        .target(&*flow.id)
        .with("name", flow.name.as_str())
        .with("endpoint_name", flow.endpoint_name.clone())
        .with("access", flow.access.as_str())
}

/// Langflow's `PUT /api/v1/flows/{id}`: creates the caller's flow with this
/// id (201), or replaces every field of the caller's flow that has it
/// (200). Another user's id is 404, like every cross-user access.
#[utoipa::path(put, path = "/api/v1/flows/{id}", tag = "flows", params(("id" = String, Path, format = "uuid")),
    request_body(content = CreateFlowRequest, description = "As for POST; read as JSON whatever the content type"),
    responses((status = 200, description = "The caller's flow, replaced", body = SavedFlow),
        (status = 201, description = "The flow, created under this id", body = SavedFlow)), security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = [])))]
async fn upsert_flow(
    state: web::Data<AppState>,
    origin: Origin,
    ById { principal, id }: ById,
    body: LenientJson<CreateFlowRequest>,
) -> Result<HttpResponse, AppError> {
    let new = new_flow(&state, &principal, body.0, id)?;
    let entry = Entry::new(Action::FlowCreate, &origin).by(&principal);
    let (flow, created) = db::run(&state.pool, move |conn| {
        audit::within_serializable(conn, |conn| {
            let written = store::upsert(conn, new)?;
            let entries = written
                .as_ref()
                .map(|(flow, created)| {
                    let entry = described(entry, flow);
                    if *created {
                        entry
                    } else {
                        entry.with("replaced", true).retitled(Action::FlowUpdate)
                    }
                })
                .into_iter()
                .collect();
            Ok((written, entries))
        })
    })
    .await?
    .ok_or_else(|| AppError::not_found(FLOW_NOT_FOUND))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    written(&state, status, flow).await
}

/// The flow a create (or a replacing PUT) describes, checked.
fn new_flow(
    state: &AppState,
    principal: &Principal,
    request: CreateFlowRequest,
    id: String,
) -> Result<store::Flow, AppError> {
    let now = db::now();
    Ok(store::Flow {
        id,
        user_id: principal.user.id.clone(),
        name: check_name(&request.name)?,
        description: check_description(request.description)?,
        endpoint_name: check_endpoint_name(request.endpoint_name)?,
        data: request.data.map(|d| d.get().to_string()),
        upstream: request
            .upstream
            .map(|u| store_upstream(state, u))
            .transpose()?,
        access: langflow::merge_access(request.access, request.access_type, check_access)?
            .unwrap_or_else(|| ACCESS_PRIVATE.into()),
        created_at: now,
        updated_at: now,
        is_component: request.is_component.unwrap_or(false),
        folder_id: langflow::check_folder_id(request.folder_id)?,
        icon: langflow::check_icon(request.icon)?,
        icon_bg_color: langflow::check_icon_bg_color(request.icon_bg_color)?,
        gradient: langflow::check_gradient(request.gradient)?,
        tags: langflow::tags_column(request.tags)?,
        locked: request.locked.unwrap_or(false),
        mcp_enabled: request.mcp_enabled.unwrap_or(false),
        webhook: request.webhook.unwrap_or(false),
    })
}

/// A created or updated flow, with what it still lacks.
#[derive(Serialize, utoipa::ToSchema)]
struct SavedFlow {
    #[serde(flatten)]
    flow: FlowView,
    warnings: Vec<warnings::Warning>,
}

/// Announces a written flow on the bus and answers with it and its
/// warnings.
async fn written(
    state: &AppState,
    status: StatusCode,
    flow: store::Flow,
) -> Result<HttpResponse, AppError> {
    state.bus.publish(Event::FlowsChanged(flow.user_id.clone()));
    let warnings = warnings::for_flow(state, &flow).await?;
    let flow = FlowView::try_from(flow)?;
    Ok(HttpResponse::build(status).json(SavedFlow { flow, warnings }))
}

#[utoipa::path(get, path = "/api/v1/flows", tag = "flows", params(ListQuery),
    responses((status = 200, description = "The caller's flows, oldest first, or a page of them", body = FlowListing)), security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = [])))]
async fn list_flows(
    state: web::Data<AppState>,
    principal: Principal,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    let query = query.into_inner();
    // As Langflow: `get_all=true` is the whole list (page and size are
    // ignored), `get_all=false` a page; without `get_all`, giving a page or
    // a size asks for a page.
    let paged = match query.get_all {
        Some(all) => !all,
        None => query.page.is_some() || query.size.is_some(),
    };
    let filter = store::ListFilter {
        folder_id: langflow::check_folder_id(query.folder_id)?,
        components_only: query.components_only.unwrap_or(false),
    };
    let headers_only = query.header_flows.unwrap_or(false);
    let page = query.page.unwrap_or(1);
    let size = query.size.unwrap_or(DEFAULT_PAGE_SIZE);
    if paged && (page < 1 || !(1..=MAX_PAGE_SIZE).contains(&size)) {
        return Err(AppError::unprocessable(format!(
            "page must be at least 1 and size between 1 and {MAX_PAGE_SIZE}"
        )));
    }
    let user_id = principal.user.id.clone();
    let window = paged.then(|| ((page - 1).saturating_mul(size), size));
    let (flows, total) = db::run(&state.pool, move |conn| {
        store::list_for_user(conn, &user_id, &filter, window)
    })
    .await?;
    let items = flows
        .into_iter()
        .map(FlowView::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    if headers_only && !paged {
        let headers: Vec<FlowHeader> = items.into_iter().map(FlowHeader::from).collect();
        return Ok(HttpResponse::Ok().json(headers));
    }
    if !paged {
        return Ok(HttpResponse::Ok().json(items));
    }
    Ok(HttpResponse::Ok().json(FlowPage {
        items,
        total,
        page,
        size,
        pages: (total + size - 1) / size,
    }))
}

#[utoipa::path(get, path = "/api/v1/flows/{id}", tag = "flows", params(("id" = String, Path, format = "uuid")),
    responses((status = 200, description = "The flow", body = FlowView)), security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = [])))]
async fn get_flow(
    state: web::Data<AppState>,
    ById { principal, id }: ById,
) -> Result<HttpResponse, AppError> {
    let user_id = principal.user.id.clone();
    let flow = db::run(&state.pool, move |conn| {
        store::find_for_user(conn, &user_id, &id)
    })
    .await?
    .ok_or_else(|| AppError::not_found(FLOW_NOT_FOUND))?;
    Ok(HttpResponse::Ok().json(FlowView::try_from(flow)?))
}

#[utoipa::path(patch, path = "/api/v1/flows/{id}", tag = "flows", params(("id" = String, Path, format = "uuid")),
    request_body(content = UpdateFlowRequest, description = "Read as JSON whatever the content type"),
    responses((status = 200, description = "The flow and what it still lacks", body = SavedFlow)), security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = [])))]
async fn update_flow(
    state: web::Data<AppState>,
    origin: Origin,
    ById { principal, id }: ById,
    LenientJson(request): LenientJson<UpdateFlowRequest>,
) -> Result<HttpResponse, AppError> {
    let changes = store::FlowChanges {
        name: request.name.as_deref().map(check_name).transpose()?,
        description: request.description.map(check_description).transpose()?,
        endpoint_name: request.endpoint_name.map(check_endpoint_name).transpose()?,
        data: request.data.map(|d| d.map(|d| d.get().to_string())),
        upstream: request
            .upstream
            .map(|u| u.map(|u| store_upstream(&state, u)).transpose())
            .transpose()?,
        access: langflow::merge_access(request.access, request.access_type, check_access)?,
        updated_at: None,
        is_component: request.is_component,
        folder_id: request
            .folder_id
            .map(langflow::check_folder_id)
            .transpose()?,
        icon: request.icon.map(langflow::check_icon).transpose()?,
        icon_bg_color: request
            .icon_bg_color
            .map(langflow::check_icon_bg_color)
            .transpose()?,
        gradient: request.gradient.map(langflow::check_gradient).transpose()?,
        tags: request.tags.map(langflow::tags_column).transpose()?,
        locked: request.locked,
        mcp_enabled: request.mcp_enabled,
        webhook: request.webhook,
    };
    let user_id = principal.user.id.clone();
    let owner = user_id.clone();
    let entry = Entry::new(Action::FlowUpdate, &origin)
        .by(&principal)
        .with("changed", changed_fields(&changes));
    let flow = db::run(&state.pool, move |conn| {
        audit::within_serializable(conn, |conn| {
            let flow = store::update(conn, &user_id, &id, changes)?;
            let entries = flow
                .as_ref()
                .map(|flow| described(entry, flow))
                .into_iter()
                .collect();
            Ok((flow, entries))
        })
    })
    .await;
    if flow.is_err() {
        // Evict even on failure: the cache must never outlive a change.
        state.bus.publish(Event::FlowsChanged(owner));
    }
    let flow = flow?.ok_or_else(|| AppError::not_found(FLOW_NOT_FOUND))?;
    written(&state, StatusCode::OK, flow).await
}

/// The names of the fields a PATCH changes (never their values).
fn changed_fields(changes: &store::FlowChanges) -> Vec<&'static str> {
    [
        ("name", changes.name.is_some()),
        ("description", changes.description.is_some()),
        ("endpoint_name", changes.endpoint_name.is_some()),
        ("data", changes.data.is_some()),
        ("upstream", changes.upstream.is_some()),
        ("access", changes.access.is_some()),
        ("is_component", changes.is_component.is_some()),
        ("folder_id", changes.folder_id.is_some()),
        ("icon", changes.icon.is_some()),
        ("icon_bg_color", changes.icon_bg_color.is_some()),
        ("gradient", changes.gradient.is_some()),
        ("tags", changes.tags.is_some()),
        ("locked", changes.locked.is_some()),
        ("mcp_enabled", changes.mcp_enabled.is_some()),
        ("webhook", changes.webhook.is_some()),
    ]
    .into_iter()
    .filter_map(|(field, changed)| changed.then_some(field))
    .collect()
}

/// Deletes a flow and the keys bound to it, audited as `flow.delete` and
/// one `key.revoke` per bound key.
#[utoipa::path(delete, path = "/api/v1/flows/{id}", tag = "flows", params(("id" = String, Path, format = "uuid")),
    responses((status = 200, description = "`{\"message\": \"Flow deleted successfully\"}`", body = routing::Message)), security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = [])))]
async fn delete_flow(
    state: web::Data<AppState>,
    origin: Origin,
    ById { principal, id }: ById,
) -> Result<HttpResponse, AppError> {
    let user_id = principal.user.id.clone();
    let owner = user_id.clone();
    let entry = Entry::new(Action::FlowDelete, &origin).by(&principal);
    let revoke = Entry::new(Action::KeyRevoke, &origin)
        .by(&principal)
        .with("reason", "flow_deleted")
        .with("flow_id", id.as_str());
    let deleted_keys = db::run(&state.pool, move |conn| {
        audit::within(conn, |conn| {
            let Some(flow) = store::find_for_user(conn, &user_id, &id)? else {
                return Ok((None, Vec::new()));
            };
            let Some(key_ids) = store::delete_for_user(conn, &user_id, &id)? else {
                return Ok((None, Vec::new()));
            };
            let mut entries =
                vec![described(entry, &flow).with("bound_keys_revoked", key_ids.len())];
            entries.extend(
                key_ids
                    .iter()
                    .map(|key_id| revoke.clone().target(key_id.as_str())),
            );
            Ok((Some(key_ids), entries))
        })
    })
    .await;
    state.bus.publish(Event::FlowsChanged(owner));
    let deleted_keys = deleted_keys?.ok_or_else(|| AppError::not_found(FLOW_NOT_FOUND))?;
    for key_id in deleted_keys {
        state.bus.publish(Event::KeyChanged(key_id));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({"message": "Flow deleted successfully"})))
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::Value;

    fn upstream(value: Value) -> Result<Upstream, AppError> {
        serde_json::from_value::<Upstream>(value)
            .map_err(|e| AppError::unprocessable(e.to_string()))?
            .validated()
    }

    #[test]
    fn validates_upstreams() {
        let ok = upstream(serde_json::json!({
            "url": "https://example.com/api/v1/run/x",
            "credential": {"provider": "generic", "as": "header", "header": "X-API-Key"}
        }))
        .unwrap();
        assert_eq!(ok.method.as_deref(), Some("POST"));
        assert_eq!(ok.credential.unwrap().header.as_deref(), Some("x-api-key"));
        for bad in [
            serde_json::json!({"url": "ftp://example.com"}),
            serde_json::json!({"url": "not a url"}),
            serde_json::json!({"url": "https://u:p@example.com"}),
            serde_json::json!({"url": "https://example.com", "method": "TRACE"}),
            serde_json::json!({"url": "https://example.com", "extra": 1}),
            serde_json::json!({"url": "https://example.com", "credential": {"as": "bearer"}}),
            serde_json::json!({"url": "https://example.com",
                "credential": {"provider": "openai", "variable": "X"}}),
            serde_json::json!({"url": "https://example.com",
                "credential": {"provider": "aws"}}),
            serde_json::json!({"url": "https://example.com",
                "credential": {"provider": "openai", "as": "header"}}),
            serde_json::json!({"url": "https://example.com",
                "credential": {"provider": "openai", "as": "header", "header": "Host"}}),
        ] {
            assert!(upstream(bad.clone()).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn endpoint_names_are_url_safe_and_not_uuids() {
        assert_eq!(
            check_endpoint_name(Some("my-flow_1".into())).unwrap(),
            Some("my-flow_1".into())
        );
        assert_eq!(check_endpoint_name(Some(" ".into())).unwrap(), None);
        assert!(check_endpoint_name(Some("a/b".into())).is_err());
        assert!(check_endpoint_name(Some("with space".into())).is_err());
        assert!(check_endpoint_name(Some(uuid::Uuid::new_v4().to_string())).is_err());
    }
}
