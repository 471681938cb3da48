//! How the domains declare their routes: every resource answers at `path`
//! and `path/` (Langflow's clients use both), and a resource whose `{id}` is
//! a UUID names what it identifies, so a malformed id is 422 `Invalid <what>
//! id: expected a UUID` (see `error::extractors::uuid_path`).
//!
//! ```text
//! routing::resources!(cfg {
//!     "/api_key": get list_keys, post create_key;
//!     "/api_key/{id}" ["API key"]: delete delete_key, patch update_key;
//! });
//! ```
//!
//! Every route is also recorded (see [`registered`]) so a test can compare
//! what is served with the OpenAPI document (`crate::openapi`): a route
//! registered outside `resources!` calls [`record`] beside its
//! registration.

use std::cell::RefCell;
use std::collections::BTreeSet;

/// [`API_PREFIX`] as a literal, for `concat!` in `resources!`.
macro_rules! api_prefix {
    () => {
        "/api/v1"
    };
}
pub(crate) use api_prefix;

/// Where the API's routes are mounted; `resources!` paths are under it.
pub const API_PREFIX: &str = api_prefix!();

/// The route template a request was answered by (`/api/v1/flows/{id}`),
/// for the request metrics and the access log: never the path, so no key
/// or id is in a label. Each `resources!` resource carries its own as app
/// data, which the server reads after the answer instead of matching the
/// path against the routes a second time; the gateway's run routes put
/// theirs in the request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct RouteTemplate(pub &'static str);

/// Registers each `path` (and `path/`) with one handler per method.
///
/// Each form is a resource of its own: a resource with one pattern is
/// matched by comparing strings when the pattern is static, while a
/// resource with several patterns is always matched by running a regular
/// expression per pattern, on every request that reaches it.
///
/// `resources!(root cfg { … })` mounts the same resources at the root
/// under their full API path instead of inside the `/api/v1` scope: the
/// hottest routes are tried before the scope, so they skip its own round
/// of routing.
macro_rules! resources {
    (root $cfg:ident { $($body:tt)* }) => {
        $crate::routing::resources!(@mount $cfg root $($body)*)
    };
    ($cfg:ident { $($body:tt)* }) => {
        $crate::routing::resources!(@mount $cfg scoped $($body)*)
    };
    (@mount $cfg:ident $mount:ident $( $path:literal $([$what:literal])? : $($method:ident $handler:path),+ ; )*) => {
        $(
            $( $crate::routing::record_api(stringify!($method), $path); )+
            for (path, template) in [
                ($crate::routing::mounted!($mount, $path), concat!($crate::routing::api_prefix!(), $path)),
                ($crate::routing::mounted!($mount, concat!($path, "/")), concat!($crate::routing::api_prefix!(), $path, "/")),
            ] {
                $cfg.service({
                    let resource = actix_web::web::resource(path)
                        .app_data($crate::routing::RouteTemplate(template));
                    $( let resource = resource.app_data($crate::error::extractors::uuid_path($what)); )?
                    resource $( .route(actix_web::web::$method().to($handler)) )+
                });
            }
        )*
    };
}
pub(crate) use resources;

/// Where `resources!` mounts `path`: as given inside the `/api/v1` scope,
/// under the full API path at the root.
macro_rules! mounted {
    (scoped, $path:expr) => {
        $path
    };
    (root, $path:expr) => {
        concat!($crate::routing::api_prefix!(), $path)
    };
}
pub(crate) use mounted;

/// A 200 with `body` as JSON that no cache may keep: the answer that shows
/// a secret once (a new key, a just-saved credential).
pub fn no_store_json(body: impl serde::Serialize) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(body)
}

/// A route as served: lower-case method and full path pattern (without the
/// `path/` twin), e.g. `("get", "/api/v1/flows/{id}")`.
pub type RouteEntry = (String, String);

thread_local! {
    /// The routes noted while [`registered`] runs on this thread.
    static RECORDING: RefCell<Option<BTreeSet<RouteEntry>>> = const { RefCell::new(None) };
}

/// Notes `method path` (`path` as served, from the root) while
/// [`registered`] runs; nothing otherwise.
pub fn record(method: &str, path: &str) {
    RECORDING.with_borrow_mut(|recording| {
        if let Some(routes) = recording {
            routes.insert((method.to_ascii_lowercase(), path.to_string()));
        }
    });
}

/// [`record`] for a path under [`API_PREFIX`].
pub fn record_api(method: &str, path: &str) {
    record(method, &format!("{API_PREFIX}{path}"));
}

/// Every route `configure` registers (through `resources!` or beside a
/// [`record`] call): what the drift test compares with the document.
pub fn registered(
    configure: impl FnOnce(&mut actix_web::web::ServiceConfig),
) -> BTreeSet<RouteEntry> {
    RECORDING.set(Some(BTreeSet::new()));
    drop(actix_web::App::new().configure(configure));
    RECORDING.take().unwrap_or_default()
}

/// `{"message": "…"}`: how a few routes answer, as Langflow's do.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Message {
    pub message: String,
}
