//! A recording fake upstream for the gateway tests: an actix-web server on
//! 127.0.0.1:0, on its own thread with its own actix System (the test's
//! current-thread runtime also drives the client, so a server on it could
//! deadlock). It reports every request it receives, and the end of its
//! held-open streams, through channels the test awaits.
//!
//! Paths:
//! - `/sse`: `text/event-stream`; sends `data: first`, then waits until the
//!   test calls [`FakeUpstream::release`], then sends `data: last`.
//! - `/hang`: sends `data: first`, then holds the stream open forever; when
//!   the stream is dropped (the connection closed) it reports `"hang"` on
//!   [`FakeUpstream::next_closed`].
//! - `/slow`: answers only after [`FakeUpstream::release`]; reports
//!   `"slow"` on [`FakeUpstream::next_closed`] when its handler ends or is
//!   dropped (the connection closed before it answered).
//! - `/status/{code}`: answers that status with a `text/plain` body.
//! - anything else: 200 `application/json` `{"outputs": […], "session_id"}`.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures_util::StreamExt;
use tokio::sync::{mpsc, Notify};

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Lower-case names, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header value and the query and body, as one text, to assert
    /// that something does not appear anywhere.
    pub fn everything(&self) -> String {
        let mut all = format!("{} {}?{}\n", self.method, self.path, self.query);
        for (n, v) in &self.headers {
            all.push_str(&format!("{n}: {v}\n"));
        }
        all.push_str(&String::from_utf8_lossy(&self.body));
        all
    }
}

struct Shared {
    received: mpsc::UnboundedSender<Received>,
    closed: mpsc::UnboundedSender<&'static str>,
    release: Arc<Notify>,
}

pub struct FakeUpstream {
    pub base: String,
    received: mpsc::UnboundedReceiver<Received>,
    closed: mpsc::UnboundedReceiver<&'static str>,
    release: Arc<Notify>,
    system: actix_web::rt::System,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Bounds every wait so a broken gateway fails the test instead of
/// hanging it; never used to order events.
const PATIENCE: Duration = Duration::from_secs(20);

impl FakeUpstream {
    pub fn start() -> Self {
        let (received_tx, received) = mpsc::unbounded_channel();
        let (closed_tx, closed) = mpsc::unbounded_channel();
        let release = Arc::new(Notify::new());
        let shared = web::Data::new(Shared {
            received: received_tx,
            closed: closed_tx,
            release: release.clone(),
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let system = actix_web::rt::System::new();
            system.block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(shared.clone())
                        .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                        .default_service(web::to(respond))
                })
                .workers(1)
                .h1_allow_half_closed(false)
                .disable_signals()
                .shutdown_timeout(0)
                .bind("127.0.0.1:0")
                .expect("bind the fake upstream");
                let addr = server.addrs()[0];
                actix_web::rt::spawn(server.run());
                ready_tx
                    .send((addr, actix_web::rt::System::current()))
                    .unwrap();
            });
            // Runs until `System::stop` (see `Drop`).
            let _ = system.run();
        });
        let (addr, system) = ready_rx.recv().expect("fake upstream started");
        FakeUpstream {
            base: format!("http://{addr}"),
            received,
            closed,
            release,
            system,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The next request the upstream received.
    pub async fn next_request(&mut self) -> Received {
        tokio::time::timeout(PATIENCE, self.received.recv())
            .await
            .expect("the upstream received no request")
            .expect("fake upstream gone")
    }

    /// True when no request reached the upstream (so far).
    pub fn received_nothing(&mut self) -> bool {
        self.received.try_recv().is_err()
    }

    /// Which held-open stream was dropped next.
    pub async fn next_closed(&mut self) -> &'static str {
        tokio::time::timeout(PATIENCE, self.closed.recv())
            .await
            .expect("the upstream stream was never dropped")
            .expect("fake upstream gone")
    }

    /// Lets `/sse` send its last event, or `/slow` answer.
    pub fn release(&self) {
        self.release.notify_one();
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.system.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reports a held-open stream's end when dropped.
struct DropSignal(mpsc::UnboundedSender<&'static str>, &'static str);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

async fn respond(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let received = Received {
        method: req.method().to_string(),
        path: req.path().to_string(),
        query: req.query_string().to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    let _ = shared.received.send(received);
    let path = req.path().to_string();
    let first = futures_util::stream::once(async {
        Ok::<_, actix_web::Error>(web::Bytes::from_static(b"data: first\n\n"))
    });
    match path.as_str() {
        "/sse" => {
            let release = shared.release.clone();
            let last = futures_util::stream::once(async move {
                release.notified().await;
                Ok(web::Bytes::from_static(b"data: last\n\n"))
            });
            HttpResponse::Ok()
                .content_type("text/event-stream")
                .insert_header(("cache-control", "no-cache"))
                .streaming(first.chain(last))
        }
        "/hang" => {
            let signal = DropSignal(shared.closed.clone(), "hang");
            let never = futures_util::stream::once(async move {
                let _signal = signal;
                std::future::pending::<()>().await;
                Ok(web::Bytes::new())
            });
            HttpResponse::Ok()
                .content_type("text/event-stream")
                .streaming(first.chain(never))
        }
        "/slow" => {
            // Reports "slow" if the request is dropped before the release
            // (or when it completes).
            let _signal = DropSignal(shared.closed.clone(), "slow");
            shared.release.notified().await;
            HttpResponse::Ok().json(serde_json::json!({"late": true}))
        }
        p if p.starts_with("/status/") => {
            let code: u16 = p["/status/".len()..].parse().unwrap_or(500);
            HttpResponse::build(StatusCode::from_u16(code).unwrap())
                .content_type("text/plain; charset=utf-8")
                .body(format!("upstream said {code}"))
        }
        _ => HttpResponse::Ok().json(serde_json::json!({
            "session_id": "fake-session",
            "outputs": [{"outputs": [{"results": {"message": {"text": "hello from upstream"}}}]}],
        })),
    }
}
