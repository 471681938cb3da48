//! A local stand-in for Langfuse and an OpenAI-compatible API, speaking
//! their real wire format, on a loopback port. It runs on a thread and
//! runtime of its own: keygate's start-up does synchronous work on the
//! test's thread, which would starve a server sharing that runtime.
//!
//! - `GET /api/public/projects`, HTTP Basic auth (public key : secret key):
//!   200 `{"data": [{"id", "name"}]}` for a known pair, 401 otherwise.
//! - `GET /v1/models`, `Authorization: Bearer`: 200 `{"object": "list",
//!   "data": [...]}` for a known key, 401 otherwise.
//! - Everything under `/slow/` never answers (it awaits a future that is
//!   never woken), for time-out tests.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine;
use serde_json::json;

pub const LANGFUSE_PUBLIC: &str = "pk-lf-1a2b3c4d-public";
pub const LANGFUSE_SECRET: &str = "sk-lf-5e6f7a8b-secret-value-0001";
pub const LANGFUSE_PUBLIC_2: &str = "pk-lf-second-public";
pub const LANGFUSE_SECRET_2: &str = "sk-lf-second-secret-value-0002";
/// A valid pair whose projects list is empty.
pub const LANGFUSE_PUBLIC_EMPTY: &str = "pk-lf-no-projects";
pub const LANGFUSE_SECRET_EMPTY: &str = "sk-lf-no-projects-secret-0003";
pub const OPENAI_KEY: &str = "sk-proj-openai-valid-key-0123456789";

#[derive(Default)]
struct Shared {
    hits: AtomicUsize,
    reject_all: AtomicBool,
}

pub struct FakeProvider {
    pub base: String,
    shared: Arc<Shared>,
    handle: actix_web::dev::ServerHandle,
}

impl FakeProvider {
    pub fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let server_shared = shared.clone();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let data = web::Data::from(server_shared);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .route("/api/public/projects", web::get().to(projects))
                        .route("/v1/models", web::get().to(models))
                        .route("/slow/{tail:.*}", web::to(never))
                })
                .workers(1)
                .disable_signals()
                .bind("127.0.0.1:0")
                .expect("bind fake provider");
                let addr = server.addrs()[0];
                let server = server.run();
                tx.send((addr, server.handle())).unwrap();
                let _ = server.await;
            });
        });
        let (addr, handle) = rx.recv().expect("fake provider started");
        FakeProvider {
            base: format!("http://{addr}"),
            shared,
            handle,
        }
    }

    /// A base URL whose endpoints never answer.
    pub fn slow_base(&self) -> String {
        format!("{}/slow", self.base)
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// From now on, every credential is refused with 401.
    pub fn reject_everything(&self) {
        self.shared.reject_all.store(true, Ordering::SeqCst);
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        // Sends the stop command at once; the thread ends by itself.
        drop(self.handle.stop(false));
    }
}

fn basic_auth(req: &HttpRequest) -> Option<(String, String)> {
    let header = req.headers().get("authorization")?.to_str().ok()?;
    let encoded = header.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

async fn projects(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    shared.hits.fetch_add(1, Ordering::SeqCst);
    let unauthorized = HttpResponse::Unauthorized().json(json!({
        "message": "Invalid credentials. Confirm that you've configured the correct host."
    }));
    if shared.reject_all.load(Ordering::SeqCst) {
        return unauthorized;
    }
    let project = match basic_auth(&req) {
        Some((u, p)) if u == LANGFUSE_PUBLIC && p == LANGFUSE_SECRET => {
            json!([{"id": "proj-1", "name": "Demo project", "metadata": {}}])
        }
        Some((u, p)) if u == LANGFUSE_PUBLIC_2 && p == LANGFUSE_SECRET_2 => {
            json!([{"id": "proj-2", "name": "Second project", "metadata": {}}])
        }
        Some((u, p)) if u == LANGFUSE_PUBLIC_EMPTY && p == LANGFUSE_SECRET_EMPTY => json!([]),
        _ => return unauthorized,
    };
    HttpResponse::Ok().json(json!({ "data": project }))
}

async fn models(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    shared.hits.fetch_add(1, Ordering::SeqCst);
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if shared.reject_all.load(Ordering::SeqCst) || bearer != Some(OPENAI_KEY) {
        return HttpResponse::Unauthorized().json(json!({"error": {
            "message": "Incorrect API key provided.",
            "type": "invalid_request_error",
            "code": "invalid_api_key"
        }}));
    }
    HttpResponse::Ok().json(json!({
        "object": "list",
        "data": [{"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"}]
    }))
}

async fn never(shared: web::Data<Shared>) -> HttpResponse {
    shared.hits.fetch_add(1, Ordering::SeqCst);
    std::future::pending::<()>().await;
    HttpResponse::Ok().finish()
}
