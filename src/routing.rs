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

/// Registers each `path` (and `path/`) with one handler per method.
///
/// Each form is a resource of its own: a resource with one pattern is
/// matched by comparing strings when the pattern is static, while a
/// resource with several patterns is always matched by running a regular
/// expression per pattern, on every request that reaches it.
macro_rules! resources {
    ($cfg:ident { $( $path:literal $([$what:literal])? : $($method:ident $handler:path),+ ; )* }) => {
        $(
            for path in [$path, concat!($path, "/")] {
                $cfg.service({
                    let resource = actix_web::web::resource(path);
                    $( let resource = resource.app_data($crate::error::extractors::uuid_path($what)); )?
                    resource $( .route(actix_web::web::$method().to($handler)) )+
                });
            }
        )*
    };
}
pub(crate) use resources;

/// A 200 with `body` as JSON that no cache may keep: the answer that shows
/// a secret once (a new key, a just-saved credential).
pub fn no_store_json(body: impl serde::Serialize) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(body)
}
