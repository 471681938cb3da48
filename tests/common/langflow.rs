//! A stand-in Langflow server for the tests: one ChatInput -> ChatOutput
//! flow that echoes its input, speaking Langflow 1.13's wire formats for
//! the routes its clients use (real Langflow is too heavy for CI). An
//! actix-web server on 127.0.0.1:0 on its own thread, like
//! [`super::upstream::FakeUpstream`]; every request it receives is
//! reported on a channel.
//!
//! - `POST /api/v1/run/{flow}`: `{"session_id", "outputs": [...]}` with the
//!   text `echo: <input_value>`, plus ` | <path>: <content>` for each tweak
//!   value naming an uploaded file. With `?stream=true` or `"stream": true`
//!   in the body: `text/event-stream` of JSON events, each followed by a
//!   blank line: `add_message` (the input), one `token` per word,
//!   `add_message` (the answer), `end` with the same result. The session
//!   id is the body's or, as in Langflow, the flow's id.
//! - `POST /api/v1/run/advanced/{flow}`: `{"inputs": [{"input_value"}]}` →
//!   the same result.
//! - `POST /api/v1/webhook/{flow}`: 202 `{"message": "Task started in the
//!   background", "status": "in progress"}`.
//! - `POST /api/v1/files/upload/{flow}` (multipart, field `file`): 201
//!   `{"flowId", "file_path": "<flow id>/<n>_<file name>"}`.
//!
//! Every route wants Langflow's key in `x-api-key` (403 otherwise, as
//! Langflow) and its one flow id (404 otherwise). Bodies are read as they
//! arrive: the first chunk of each is reported as `"body started"` on
//! [`StandInLangflow::next_body_event`], and a body that stops before its
//! end (the connection closed) as `"body broke off"`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::upstream::Received;

const PATIENCE: Duration = Duration::from_secs(20);

struct Shared {
    key: String,
    flow_id: String,
    files: Mutex<HashMap<String, Vec<u8>>>,
    received: mpsc::UnboundedSender<Received>,
    bodies: mpsc::UnboundedSender<&'static str>,
}

pub struct StandInLangflow {
    pub base: String,
    /// The key Langflow accepts.
    pub key: String,
    /// Langflow's id of its one flow.
    pub flow_id: String,
    received: mpsc::UnboundedReceiver<Received>,
    bodies: mpsc::UnboundedReceiver<&'static str>,
    system: actix_web::rt::System,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StandInLangflow {
    pub fn start() -> Self {
        Self::start_for(&uuid::Uuid::new_v4().to_string())
    }

    /// A stand-in whose one flow has this id (a flow imported from a real
    /// Langflow database).
    pub fn start_for(flow_id: &str) -> Self {
        let key = format!("sk-langflow-{}", uuid::Uuid::new_v4().simple());
        let flow_id = flow_id.to_string();
        let (received_tx, received) = mpsc::unbounded_channel();
        let (bodies_tx, bodies) = mpsc::unbounded_channel();
        let shared = web::Data::new(Shared {
            key: key.clone(),
            flow_id: flow_id.clone(),
            files: Mutex::new(HashMap::new()),
            received: received_tx,
            bodies: bodies_tx,
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let system = actix_web::rt::System::new();
            system.block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(shared.clone())
                        .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                        .default_service(web::to(respond))
                })
                .workers(1)
                .disable_signals()
                .shutdown_timeout(0)
                .bind("127.0.0.1:0")
                .expect("bind the stand-in Langflow");
                let addr = server.addrs()[0];
                actix_web::rt::spawn(server.run());
                ready_tx
                    .send((addr, actix_web::rt::System::current()))
                    .unwrap();
            });
            let _ = system.run();
        });
        let (addr, system) = ready_rx.recv().expect("stand-in Langflow started");
        StandInLangflow {
            base: format!("http://{addr}"),
            key,
            flow_id,
            received,
            bodies,
            system,
            thread: Some(thread),
        }
    }

    /// The next request the stand-in received.
    pub async fn next_request(&mut self) -> Received {
        tokio::time::timeout(PATIENCE, self.received.recv())
            .await
            .expect("the stand-in Langflow received no request")
            .expect("stand-in Langflow gone")
    }

    /// The next body event (see the module doc).
    pub async fn next_body_event(&mut self) -> &'static str {
        tokio::time::timeout(PATIENCE, self.bodies.recv())
            .await
            .expect("the stand-in Langflow reported no body event")
            .expect("stand-in Langflow gone")
    }

    /// Every request reported so far (each is reported before it is
    /// answered, so after a client's last answer this is all of them).
    pub fn drain(&mut self) -> Vec<Received> {
        let mut all = Vec::new();
        while let Ok(got) = self.received.try_recv() {
            all.push(got);
        }
        all
    }

    /// True when no request reached the stand-in (so far).
    pub fn received_nothing(&mut self) -> bool {
        self.received.try_recv().is_err()
    }
}

impl Drop for StandInLangflow {
    fn drop(&mut self) {
        self.system.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn detail(status: StatusCode, text: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({"detail": text.into()}))
}

/// Reports `"body broke off"` when dropped before [`BodyGuard::done`].
struct BodyGuard(Option<mpsc::UnboundedSender<&'static str>>);

impl BodyGuard {
    fn done(mut self) {
        self.0 = None;
    }
}

impl Drop for BodyGuard {
    fn drop(&mut self) {
        if let Some(sender) = self.0.take() {
            let _ = sender.send("body broke off");
        }
    }
}

/// The whole body, read chunk by chunk; `None` when it broke off.
async fn read_body(mut payload: web::Payload, shared: &Shared) -> Option<Vec<u8>> {
    use futures_util::StreamExt;
    let mut body = Vec::new();
    let mut guard = None;
    while let Some(chunk) = payload.next().await {
        if guard.is_none() {
            let _ = shared.bodies.send("body started");
            guard = Some(BodyGuard(Some(shared.bodies.clone())));
        }
        body.extend_from_slice(&chunk.ok()?);
    }
    if let Some(guard) = guard {
        guard.done();
    }
    Some(body)
}

async fn respond(
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let Some(body) = read_body(payload, &shared).await else {
        return detail(StatusCode::BAD_REQUEST, "body broke off");
    };
    let body = web::Bytes::from(body);
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

    let key = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
    if key != Some(shared.key.as_str()) {
        return detail(StatusCode::FORBIDDEN, "Invalid or missing API key");
    }
    let path = req.path().trim_end_matches('/');
    let (route, flow) = match path.rsplit_once('/') {
        Some((route, flow)) => (route, flow),
        None => return detail(StatusCode::NOT_FOUND, "Not Found"),
    };
    if req.method() != actix_web::http::Method::POST {
        return detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    }
    if flow != shared.flow_id {
        return detail(
            StatusCode::NOT_FOUND,
            format!("Flow identifier {flow} not found"),
        );
    }
    match route {
        "/api/v1/run" => run(&req, &body, &shared),
        "/api/v1/run/advanced" => advanced(&body, &shared),
        "/api/v1/webhook" => HttpResponse::Accepted().json(json!({
            "message": "Task started in the background",
            "status": "in progress",
        })),
        "/api/v1/files/upload" => upload(&req, &body, &shared),
        _ => detail(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// The answer to an input, with the content of every uploaded file a
/// tweak names.
fn reply(input: &str, tweaks: &Value, shared: &Shared) -> String {
    let mut text = format!("echo: {input}");
    let files = shared.files.lock().unwrap();
    let mut named = Vec::new();
    collect_strings(tweaks, &mut named);
    for path in named {
        if let Some(content) = files.get(&path) {
            text.push_str(&format!(" | {path}: {}", String::from_utf8_lossy(content)));
        }
    }
    text
}

fn collect_strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

/// Langflow's run result for one chat answer.
fn result(session_id: &str, input: &str, text: &str, flow_id: &str) -> Value {
    let message = json!({
        "text": text,
        "sender": "Machine",
        "sender_name": "AI",
        "session_id": session_id,
        "flow_id": flow_id,
    });
    json!({
        "session_id": session_id,
        "outputs": [{
            "inputs": {"input_value": input},
            "outputs": [{
                "results": {"message": message},
                "artifacts": {"message": text, "sender": "Machine", "type": "text"},
                "outputs": {"message": {"message": text, "type": "text"}},
                "logs": {"message": []},
                "messages": [{
                    "message": text,
                    "sender": "Machine",
                    "sender_name": "AI",
                    "session_id": session_id,
                    "component_id": "ChatOutput-1",
                    "type": "text",
                }],
                "component_display_name": "Chat Output",
                "component_id": "ChatOutput-1",
                "used_frozen_result": false,
            }],
        }],
    })
}

fn run(req: &HttpRequest, body: &[u8], shared: &Shared) -> HttpResponse {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return detail(StatusCode::UNPROCESSABLE_ENTITY, "body is not JSON");
    };
    let input = request["input_value"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let session_id = request["session_id"]
        .as_str()
        .unwrap_or(&shared.flow_id)
        .to_string();
    let text = reply(&input, &request["tweaks"], shared);
    let result = result(&session_id, &input, &text, &shared.flow_id);
    let stream = req.query_string().split('&').any(|p| p == "stream=true")
        || request["stream"].as_bool() == Some(true);
    if !stream {
        return HttpResponse::Ok().json(result);
    }
    let message = |sender: &str, text: &str| {
        json!({"event": "add_message", "data": {
            "sender": sender,
            "sender_name": sender,
            "session_id": session_id,
            "text": text,
            "flow_id": shared.flow_id,
            "files": [],
            "error": false,
        }})
    };
    let mut events = vec![message("User", &input)];
    for word in text.split_inclusive(' ') {
        events.push(json!({"event": "token", "data": {
            "chunk": word, "id": "ChatOutput-1", "timestamp": "2026-12-03 00:00:00 UTC",
        }}));
    }
    events.push(message("Machine", &text));
    events.push(json!({"event": "end", "data": {"result": result}}));
    let chunks: Vec<Result<web::Bytes, actix_web::Error>> = events
        .into_iter()
        .map(|e| Ok(web::Bytes::from(format!("{e}\n\n"))))
        .collect();
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(futures_util::stream::iter(chunks))
}

fn advanced(body: &[u8], shared: &Shared) -> HttpResponse {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return detail(StatusCode::UNPROCESSABLE_ENTITY, "body is not JSON");
    };
    let input = request["inputs"][0]["input_value"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let session_id = request["session_id"]
        .as_str()
        .unwrap_or(&shared.flow_id)
        .to_string();
    let text = reply(&input, &request["tweaks"], shared);
    HttpResponse::Ok().json(result(&session_id, &input, &text, &shared.flow_id))
}

fn upload(req: &HttpRequest, body: &[u8], shared: &Shared) -> HttpResponse {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some((name, content)) = multipart_file(content_type, body) else {
        return detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Field required: file (multipart/form-data)",
        );
    };
    let mut files = shared.files.lock().unwrap();
    let path = format!("{}/{}_{name}", shared.flow_id, files.len() + 1);
    files.insert(path.clone(), content);
    HttpResponse::Created().json(json!({"flowId": shared.flow_id, "file_path": path}))
}

/// The file name and content of the part named `file`.
fn multipart_file(content_type: &str, body: &[u8]) -> Option<(String, Vec<u8>)> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))?
        .trim_matches('"');
    let delimiter = format!("--{boundary}");
    let text = body;
    let mut parts = Vec::new();
    let mut start = None;
    let mut i = 0;
    while i + delimiter.len() <= text.len() {
        if text[i..].starts_with(delimiter.as_bytes()) {
            if let Some(s) = start {
                parts.push(&text[s..i]);
            }
            i += delimiter.len();
            start = Some(i);
        } else {
            i += 1;
        }
    }
    for part in parts {
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let split = part.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&part[..split]).to_string();
        let content = &part[split + 4..];
        let content = content.strip_suffix(b"\r\n").unwrap_or(content);
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))?;
        if !disposition.contains("name=\"file\"") {
            continue;
        }
        let filename = disposition
            .split(';')
            .map(str::trim)
            .find_map(|p| p.strip_prefix("filename="))
            .map(|f| f.trim_matches('"').to_string())
            .unwrap_or_else(|| "upload".into());
        return Some((filename, content.to_vec()));
    }
    None
}
