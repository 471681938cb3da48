//! The settings UI: one static page (`ui/index.html`), its script and its
//! style sheet, embedded in the binary at build time and served at `/`,
//! `/ui/app.js` and `/ui/app.css`. The page talks to the JSON API under
//! `/api/v1` with the session cookie and the session's CSRF token; it
//! fetches nothing from anywhere else. Security headers for these answers
//! (and every other) are set once in `server::start`.

use actix_web::http::header::{self, ContentType};
use actix_web::{web, HttpResponse};

pub const INDEX_HTML: &str = include_str!("../../ui/index.html");
pub const APP_JS: &str = include_str!("../../ui/app.js");
pub const APP_CSS: &str = include_str!("../../ui/app.css");

pub fn routes(cfg: &mut web::ServiceConfig) {
    for path in ["/", "/index.html", "/ui/app.js", "/ui/app.css"] {
        crate::routing::record("get", path);
    }
    cfg.route("/", web::get().to(index))
        .route("/index.html", web::get().to(index))
        .route("/ui/app.js", web::get().to(app_js))
        .route("/ui/app.css", web::get().to(app_css));
}

/// Also `/index.html`.
#[utoipa::path(get, path = "/", tag = "ui",
    responses((status = 200, description = "The settings page", body = String, content_type = "text/html")))]
async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .body(INDEX_HTML)
}

#[utoipa::path(get, path = "/ui/app.js", tag = "ui",
    responses((status = 200, description = "The page's script", body = String, content_type = "text/javascript")))]
async fn app_js() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/javascript; charset=utf-8"))
        .body(APP_JS)
}

#[utoipa::path(get, path = "/ui/app.css", tag = "ui",
    responses((status = 200, description = "The page's style sheet", body = String, content_type = "text/css")))]
async fn app_css() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/css; charset=utf-8"))
        .body(APP_CSS)
}
