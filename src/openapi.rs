//! The OpenAPI 3.1 document of the HTTP API, served at
//! `GET /api/v1/openapi.json`. It is generated from the code: each handler
//! carries a `#[utoipa::path]` attribute (its path, parameters, body,
//! answers and the credentials it accepts) and each body type derives
//! `utoipa::ToSchema`; this module gathers them and adds what every
//! operation shares (the security schemes, the `{"detail": …}` error
//! answer, unique operation ids). A test compares the document's
//! operations with the routes actually registered (`routing::registered`),
//! and CI fuzzes the running binary against it (`scripts/fuzz-api.sh`).

use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};
use utoipa::OpenApi;

use crate::identity::{API_KEY_HEADER, API_KEY_QUERY};
use crate::routing;
use crate::sessions::SESSION_COOKIE;

/// The handlers of the domains, the gateway and the UI. (The server's own
/// routes are added by `server::openapi_document`.)
#[derive(OpenApi)]
#[openapi(
    info(
        title = "keygate",
        description = "Self-hosted API-key gateway: its HTTP API. docs/api.md describes every route in prose."
    ),
    paths(
        crate::auth::check,
        crate::auth::revoke_leaked,
        crate::users::signin::login,
        crate::users::signin::logout,
        crate::users::signin::current_session,
        crate::users::signin::auto_login,
        crate::users::whoami,
        crate::users::list_users,
        crate::users::create_user,
        crate::users::update_user,
        crate::users::reset_password,
        crate::users::delete_user,
        crate::keys::list_keys,
        crate::keys::create_key,
        crate::keys::revoke_all,
        crate::keys::update_key,
        crate::keys::delete_key,
        crate::keys::rotate_key,
        crate::keys::key_usage,
        crate::audit::list,
        crate::credentials::list,
        crate::credentials::read,
        crate::credentials::save,
        crate::credentials::remove,
        crate::variables::list,
        crate::variables::create,
        crate::variables::update,
        crate::variables::remove,
        crate::flows::list_flows,
        crate::flows::create_flow,
        crate::flows::get_flow,
        crate::flows::update_flow,
        crate::flows::upsert_flow,
        crate::flows::delete_flow,
        crate::gateway::run,
        crate::gateway::run_advanced,
        crate::gateway::webhook,
        crate::gateway::upload_file,
        crate::ui::index,
        crate::ui::app_js,
        crate::ui::app_css,
        serve,
    )
)]
struct Handlers;

/// Routes served by the handler of another, described once: the copy gets
/// the same operations under its own path.
const ALIASES: &[(&str, &str)] = &[
    ("/api/v1/run/{flow}", "/api/v1/process/{flow}"),
    ("/", "/index.html"),
];

/// The security schemes, by the names the operations use.
fn security_schemes() -> Value {
    json!({
        "api_key_header": {
            "type": "apiKey", "in": "header", "name": API_KEY_HEADER,
            "description": "An `sk-` API key in the x-api-key header"
        },
        "api_key_query": {
            "type": "apiKey", "in": "query", "name": API_KEY_QUERY,
            "description": "An `sk-` API key in the x-api-key query parameter"
        },
        "session_bearer": {
            "type": "http", "scheme": "bearer",
            "description": "A session token from POST /api/v1/login, as `Authorization: Bearer`"
        },
        "session_cookie": {
            "type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
            "description": "The session cookie set by POST /api/v1/login; a browser's \
                state-changing requests also send the session's X-CSRF-Token"
        },
    })
}

/// The finished document: [`Handlers`] and `extra` (routes described
/// elsewhere), with the security schemes, the aliases, the shared error
/// answers and an operation id per operation.
pub fn document(extra: utoipa::openapi::OpenApi) -> Value {
    let mut doc = Handlers::openapi();
    doc.merge(extra);
    let mut doc = match serde_json::to_value(doc) {
        Ok(doc) => doc,
        // The document is plain data; it always serialises.
        Err(error) => return json!({"error": error.to_string()}),
    };
    if let Some(components) = doc.get_mut("components").and_then(Value::as_object_mut) {
        components.insert("securitySchemes".into(), security_schemes());
    }
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (from, to) in ALIASES {
            if let Some(item) = paths.get(*from).cloned() {
                paths.insert((*to).to_string(), item);
            }
        }
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, operation) in item.iter_mut() {
                if let Some(operation) = operation.as_object_mut() {
                    finish_operation(method, path, operation);
                }
            }
        }
    }
    doc
}

/// A unique operation id (`get_api_v1_flows_id`), and the answers every
/// operation may give besides its own: 401 where credentials are needed,
/// and any other error as `{"detail": …}`.
fn finish_operation(method: &str, path: &str, operation: &mut Map<String, Value>) {
    let slug: String = path
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let id = format!("{method}_{}", slug.trim_matches('_'));
    operation.insert("operationId".into(), Value::String(id));
    let needs_credentials = operation
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|options| {
            options
                .iter()
                .all(|o| o.as_object().is_some_and(|o| !o.is_empty()))
        });
    let error = |description: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Detail"}}}
        })
    };
    let Some(responses) = operation
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut()
    else {
        return;
    };
    if needs_credentials && !responses.contains_key("401") {
        responses.insert(
            "401".into(),
            error("No, or invalid, credentials (see docs/api.md, Authentication)"),
        );
    }
    if !responses.contains_key("default") {
        responses.insert(
            "default".into(),
            error("Any other refusal or failure, with its reason in `detail`"),
        );
    }
}

/// The document as served: built once, when the app is configured.
pub struct Document(String);

impl Document {
    pub fn new(doc: &Value) -> Self {
        Document(doc.to_string())
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    routing::record_api("get", "/openapi.json");
    cfg.route("/openapi.json", web::get().to(serve));
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "documentation",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object)))]
async fn serve(doc: web::Data<Document>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.0.clone())
}

/// `{"status": "ok"}` and the like: the health checks' answers.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Status {
    pub status: String,
    /// `/health_check` only: `ok`.
    pub db: Option<String>,
    /// `/ready` when not ready: the reason.
    pub detail: Option<String>,
}
