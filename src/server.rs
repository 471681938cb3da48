//! Building the app, binding it, and shutting it down without losing
//! usage counts.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix_web::body::EitherBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, App, HttpMessage, HttpResponse, HttpServer};
use futures_util::future::Either;
use futures_util::TryFutureExt;
use tracing::Instrument;

use std::sync::Arc;

use crate::config::{Config, MetricsEndpoint};
use crate::error::{extractors, AppError};
use crate::flows::cache::FlowCache;
use crate::gateway::SecretCache;
use crate::hosts::{self, AllowedHosts};
use crate::identity::{LoggedCaller, Principal, ACCESS_LOG, API_KEY_QUERY};
use crate::keys::limits::RateLimiter;
use crate::keys::usage::UsageRecorder;
use crate::keys::KeyVerifier;
use crate::metrics::{self, HttpSeries, Metrics, UNMATCHED_ROUTE};
use crate::request_id::{self, RequestId};
use crate::routing::RouteTemplate;
use crate::state::AppState;
use crate::{
    audit, auth, credentials, db, flows, gateway, keys, openapi, routing, ui, users, variables,
};

/// The core state and the domain services built on it, each one app data
/// of its own.
#[derive(Clone)]
pub struct Services {
    pub core: AppState,
    pub keys: Arc<KeyVerifier>,
    pub usage: Arc<UsageRecorder>,
    /// Rate-limit windows, shared with the other instances by `start`'s
    /// sync task.
    pub limits: Arc<RateLimiter>,
    pub flows: Arc<FlowCache>,
    pub secrets: Arc<SecretCache>,
    pub signin: Arc<users::throttle::SigninThrottle>,
    pub hashing: Arc<users::password::HashQueue>,
    pub key_failures: Arc<auth::KeyFailures>,
}

impl Services {
    /// Builds the domain services and subscribes their caches to the bus.
    pub fn new(core: AppState) -> Self {
        let (keys, usage, limits) = keys::services(&core);
        let flows = flows::services(&core);
        let secrets = Arc::new(SecretCache::new(
            core.config.key_cache_size,
            core.config.key_cache_ttl,
            core.bus.current(),
            &core.metrics,
        ));
        core.bus.subscribe(&secrets);
        let (signin, hashing) = users::services(&core.config);
        let key_failures = Arc::new(auth::KeyFailures::new(
            core.config.key_failures_per_minute,
            core.config.trusted_proxies.clone(),
        ));
        Services {
            signin,
            hashing,
            key_failures,
            core,
            keys,
            usage,
            limits,
            flows,
            secrets,
        }
    }
}

/// The page may load scripts, styles, images and data only from keygate
/// itself; no inline script or style; no framing; no base or form target
/// elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
    base-uri 'none'; form-action 'self'";

/// Headers on every answer, API and UI alike. `no-store` everywhere: pages
/// and API answers may show keys, and nothing here gains from caching.
pub fn security_headers() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new()
        .add((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::REFERRER_POLICY, "no-referrer"))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::CACHE_CONTROL, "no-store"))
}

/// Connects, migrates, opens the secret box (checking the operator secret
/// against the stored canary) and makes sure a superuser exists. A
/// generated superuser password is printed here, once, to the terminal
/// (standard output).
pub fn prepare(config: Config) -> Result<AppState, String> {
    prepare_announcing(config, PasswordNotice::Stdout)
}

/// Where a generated superuser password is shown. Commands whose standard
/// output is their result (`keygate api-key` prints the key) show it on
/// standard error instead, so `KEY=$(keygate api-key)` stays one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordNotice {
    Stdout,
    Stderr,
}

pub fn prepare_announcing(config: Config, notice: PasswordNotice) -> Result<AppState, String> {
    let metrics = Arc::new(Metrics::new());
    let measures = db::PoolMeasures {
        wait: metrics.pool_wait(),
        timeouts: metrics.pool_timeouts(),
    };
    let pool = db::connect_and_migrate_measured(
        &config.database_url,
        config.pool_size,
        config.db_timeout,
        Some(measures),
    )?;
    let mut conn = pool
        .get()
        .map_err(|e| format!("cannot get a database connection: {e}"))?;
    let (secrets, _) = crate::crypto::open(&config, &mut conn)?;
    let outbound = crate::outbound::Outbound::from_config(&config)?;
    if let Some(password) = users::ensure_superuser(&mut conn, &config)
        .map_err(|e| format!("superuser bootstrap: {}", e.detail()))?
    {
        let text = generated_password_notice(&config.superuser, &password);
        match notice {
            PasswordNotice::Stdout => println!("{text}"),
            PasswordNotice::Stderr => {
                // After the log lines written before it, as it happened.
                crate::log_sink::flush();
                eprintln!("{text}");
            }
        }
    }
    drop(conn);
    Ok(AppState::new(config, pool, secrets, outbound, metrics))
}

fn generated_password_notice(username: &str, password: &str) -> String {
    format!(
        "\n  keygate created the superuser {username:?} with this password, shown only now:\n\n      {password}\n\n  \
         Store it safely. Set KEYGATE_SUPERUSER_PASSWORD to choose it yourself.\n"
    )
}

/// The whole HTTP surface, shared by `serve` and the tests.
pub fn configure(services: &Services) -> impl Fn(&mut web::ServiceConfig) + Clone {
    let max_body = services.core.config.max_body_bytes;
    let metrics_on_main = services.core.config.metrics == MetricsEndpoint::Main;
    let data = web::Data::new(services.core.clone());
    let keys = web::Data::from(services.keys.clone());
    let usage = web::Data::from(services.usage.clone());
    let flows = web::Data::from(services.flows.clone());
    let secrets = web::Data::from(services.secrets.clone());
    let signin = web::Data::from(services.signin.clone());
    let hashing = web::Data::from(services.hashing.clone());
    let document = web::Data::new(openapi::Document::new(&openapi_document()));
    let key_failures = web::Data::from(services.key_failures.clone());
    move |cfg: &mut web::ServiceConfig| {
        for path in ["/health", "/health_check", "/ready"] {
            routing::record("get", path);
        }
        cfg.app_data(data.clone())
            .app_data(keys.clone())
            .app_data(usage.clone())
            .app_data(flows.clone())
            .app_data(secrets.clone())
            .app_data(signin.clone())
            .app_data(hashing.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(max_body)
                    .error_handler(extractors::json),
            )
            .app_data(web::PayloadConfig::new(max_body))
            .app_data(web::PathConfig::default().error_handler(extractors::path))
            .app_data(web::QueryConfig::default().error_handler(extractors::query))
            .app_data(key_failures.clone())
            .app_data(document.clone())
            .service(probe("/health", web::get().to(health)))
            .service(probe("/health_check", web::get().to(health_check)))
            .service(probe("/ready", web::get().to(ready)))
            // The calls scripts make most, tried before everything else
            // they could be mistaken for: runs, then whoami.
            .configure(gateway::hot_routes)
            .configure(users::hot_routes)
            .configure(|cfg| {
                if metrics_on_main {
                    cfg.route("/metrics", web::get().to(guarded_metrics));
                }
            })
            .configure(ui::routes)
            .service(
                // Resources are tried in this order.
                web::scope("/api/v1")
                    .configure(gateway::routes)
                    .configure(users::routes)
                    .configure(auth::routes)
                    .configure(users::signin::routes)
                    .configure(keys::routes)
                    .configure(credentials::routes)
                    .configure(variables::routes)
                    .configure(flows::routes)
                    .configure(openapi::routes)
                    .configure(audit::routes),
            )
            .default_service(web::to(not_found));
    }
}

/// A health route (GET only: any other method is the API's 404, as for
/// `cfg.route`), named for the request metrics as `resources!` names the
/// API's.
fn probe(path: &'static str, route: actix_web::Route) -> actix_web::Resource {
    web::resource(path)
        .guard(actix_web::guard::Get())
        .app_data(RouteTemplate(path))
        .route(route)
}

/// The server's own routes, for [`openapi_document`].
#[derive(utoipa::OpenApi)]
#[openapi(paths(health, health_check, ready))]
struct ServerRoutes;

/// The OpenAPI document of every route [`configure`] registers.
pub fn openapi_document() -> serde_json::Value {
    openapi::document(<ServerRoutes as utoipa::OpenApi>::openapi())
}

#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, description = "Liveness: `{\"status\": \"ok\"}`", body = openapi::Status)))]
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Readiness including the database: 503 while it is unreachable.
#[utoipa::path(get, path = "/health_check", tag = "health",
    responses((status = 200, description = "`{\"status\": \"ok\", \"db\": \"ok\"}`", body = openapi::Status)))]
async fn health_check(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    db::run(&state.pool, |conn| {
        use diesel::r2d2::R2D2Connection;
        conn.ping()
    })
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ok", "db": "ok"})))
}

/// Readiness for an orchestrator: 200 only when the database answers, its
/// migrations are all applied and the secret key opens the stored canary;
/// otherwise 503 with the reason. `/health` stays a liveness check.
#[utoipa::path(get, path = "/ready", tag = "health",
    responses((status = 200, description = "`{\"status\": \"ready\"}`", body = openapi::Status),
        (status = 503, description = "`{\"status\": \"not ready\", \"detail\": …}`", body = openapi::Status)))]
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    if state.shutting_down.load(Ordering::SeqCst) {
        return not_ready("shutting down");
    }
    let secrets = state.secrets.clone();
    let checked = db::run(&state.pool, move |conn| {
        if !db::migrations_current(conn).map_err(AppError::internal)? {
            return Ok(Some("database migrations are not current"));
        }
        if !crate::crypto::canary_matches(conn, &secrets).map_err(AppError::internal)? {
            return Ok(Some("the secret key does not match the stored canary"));
        }
        Ok::<_, AppError>(None)
    })
    .await;
    match checked {
        Ok(None) => HttpResponse::Ok().json(serde_json::json!({"status": "ready"})),
        Ok(Some(reason)) => not_ready(reason),
        Err(_) => not_ready("the database does not answer"),
    }
}

fn not_ready(reason: &str) -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .json(serde_json::json!({"status": "not ready", "detail": reason}))
}

/// `/metrics` on the main listener: for superusers (a session, or a key
/// with the `admin` scope), since the metrics name every user's flows.
async fn guarded_metrics(
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    principal.require_superuser()?;
    Ok(metrics_answer(&state))
}

/// `/metrics` on the metrics listener of its own.
async fn open_metrics(state: web::Data<AppState>) -> HttpResponse {
    metrics_answer(&state)
}

fn metrics_answer(state: &AppState) -> HttpResponse {
    let pool = state.pool.state();
    state.metrics.set_pool(
        pool.connections,
        pool.idle_connections,
        state.pool.max_size(),
    );
    HttpResponse::Ok()
        .content_type(metrics::CONTENT_TYPE)
        .body(state.metrics.encode())
}

async fn not_found() -> Result<HttpResponse, AppError> {
    Err(AppError::not_found("Not Found"))
}

/// Refuses a request whose `Host` is not allowed (`KEYGATE_ALLOWED_HOSTS`,
/// see `hosts`) before any other work: no credential is looked at, no
/// body read. Health checks included: a load balancer can send an
/// allowed `Host` (or the operator lists the one it sends).
fn host_refusal(allowed: &AllowedHosts, req: &ServiceRequest) -> Option<AppError> {
    if allowed.allows(hosts::request_host(req.request())) {
        return None;
    }
    tracing::debug!("request for a host that is not allowed refused");
    Some(AppError::bad_request(hosts::HOST_NOT_ALLOWED))
}

/// Turns any error response that is not already JSON (405s, payload errors
/// raised inside actix) into `{"detail": …}`, except an upstream's answer
/// relayed by the gateway.
fn json_error_body<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    // An upstream's own answer, relayed by the gateway, is passed on as is.
    let relayed = res
        .response()
        .extensions()
        .contains::<crate::gateway::RelayedAnswer>();
    if is_json || relayed {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let detail = match status.as_u16() {
        413 => "Request body is too large".to_string(),
        _ => status.canonical_reason().unwrap_or("Error").to_string(),
    };
    let (req, _) = res.into_parts();
    let response = HttpResponse::build(status).json(serde_json::json!({"detail": detail}));
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, response).map_into_right_body(),
    ))
}

/// The request target as the access log shows it: every `sk-`-shaped
/// key in the path or the query replaced by `REDACTED`, whether sent raw
/// or percent-encoded (`%73k-…`, `%2573k-…`, a key inside an encoded
/// parameter such as `a=1%26x-api-key%3Dsk-…`), and the value of any
/// `x-api-key` parameter replaced whatever its shape. The rest of the
/// target is kept as sent.
pub fn redacted_target(path: &str, query: &str) -> String {
    let mut out = redact_keys(path);
    if !query.is_empty() {
        out.push('?');
        let query = redact_keys(query);
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _)) if is_key_parameter(name) => format!("{name}=REDACTED"),
                _ => param.to_string(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

fn is_key_parameter(raw_name: &str) -> bool {
    form_urlencoded::parse(raw_name.as_bytes())
        .next()
        .is_some_and(|(name, _)| name.eq_ignore_ascii_case(API_KEY_QUERY))
}

/// Characters after `sk-` that make a key-shaped run: keys are URL-safe
/// base64, and a fragment of a few characters is already worth hiding.
const MIN_KEY_TAIL: usize = 8;

/// Replaces every run that decodes to `sk-` and at least [`MIN_KEY_TAIL`]
/// key characters, not preceded by a letter or digit (so `task-list` is
/// kept), with `REDACTED`.
fn redact_keys(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let (mut i, mut copied_to) = (0, 0);
    let mut previous: Option<u8> = None;
    while i < bytes.len() {
        let Some((byte, len)) = decoded_at(bytes, i) else {
            break;
        };
        let at_boundary = !previous.is_some_and(|b| b.is_ascii_alphanumeric());
        if at_boundary && matches!(byte, b's' | b'S') {
            if let Some(end) = key_end(bytes, i) {
                out.push_str(&raw[copied_to..i]);
                out.push_str("REDACTED");
                copied_to = end;
                i = end;
                previous = Some(b'D');
                continue;
            }
        }
        previous = Some(byte);
        i += len;
    }
    out.push_str(&raw[copied_to..]);
    out
}

/// Where a key-shaped run starting at `start` ends (raw offset), if one does.
fn key_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    for expected in [b's', b'k', b'-'] {
        let (byte, len) = decoded_at(bytes, i)?;
        if byte.to_ascii_lowercase() != expected {
            return None;
        }
        i += len;
    }
    let mut tail = 0;
    while let Some((byte, len)) = decoded_at(bytes, i) {
        if !(byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_') {
            break;
        }
        tail += 1;
        i += len;
    }
    (tail >= MIN_KEY_TAIL).then_some(i)
}

/// The byte at `i` after percent-decoding, and how many raw bytes it takes.
/// Decoding repeats (`%2573` is `%73` is `s`), a few levels deep.
fn decoded_at(bytes: &[u8], i: usize) -> Option<(u8, usize)> {
    decoded_at_depth(bytes, i, 0)
}

fn decoded_at_depth(bytes: &[u8], i: usize, depth: u8) -> Option<(u8, usize)> {
    let first = *bytes.get(i)?;
    if first != b'%' {
        return Some((first, 1));
    }
    Some(
        escape_after(bytes, i + 1, depth)
            .map(|(byte, len)| (byte, len + 1))
            .unwrap_or((b'%', 1)),
    )
}

/// The byte the escape whose `%` ends just before `i` stands for: two hex
/// digits (each possibly escaped itself); an escaped `%` starts another
/// escape with what follows.
fn escape_after(bytes: &[u8], i: usize, depth: u8) -> Option<(u8, usize)> {
    if depth >= 4 {
        return None;
    }
    let (high, high_len) = decoded_at_depth(bytes, i, depth + 1)?;
    let (low, low_len) = decoded_at_depth(bytes, i + high_len, depth + 1)?;
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let byte = hex(high)? << 4 | hex(low)?;
    let len = high_len + low_len;
    if byte == b'%' {
        if let Some((inner, inner_len)) = escape_after(bytes, i + len, depth + 1) {
            return Some((inner, len + inner_len));
        }
    }
    Some((byte, len))
}

/// The target of the span each request's log lines are written in (with
/// its `request_id`).
pub const REQUEST_SPAN: &str = "keygate::request";

/// What the server notes about every answer: the access log line and the
/// request metrics. One per worker thread, which keeps the metric handles
/// it has used by route template, method and status, so a request costs
/// two atomic additions and no lock shared with other workers.
struct RequestObserver {
    metrics: Option<Arc<Metrics>>,
    series: RefCell<HashMap<String, RouteSeries>>,
}

/// One route's handles by (method, status): a handful, searched in order.
type RouteSeries = Vec<(&'static str, u16, HttpSeries)>;

impl RequestObserver {
    fn new(metrics: Option<Arc<Metrics>>) -> Self {
        RequestObserver {
            metrics,
            series: RefCell::default(),
        }
    }

    fn finish<B>(
        &self,
        response: &ServiceResponse<B>,
        id: &RequestId,
        target: Option<String>,
        elapsed: Duration,
    ) {
        if self.metrics.is_none() && target.is_none() {
            return;
        }
        let req = response.request();
        // The route template, never the path (`routing::RouteTemplate`);
        // routes that name none are matched again.
        let named = req
            .app_data::<RouteTemplate>()
            .copied()
            .or_else(|| req.extensions().get::<RouteTemplate>().copied())
            .map(|template| template.0);
        let route = match named {
            Some(template) => std::borrow::Cow::Borrowed(template),
            None => std::borrow::Cow::Owned(
                req.match_pattern()
                    .unwrap_or_else(|| UNMATCHED_ROUTE.to_string()),
            ),
        };
        let route = route.as_ref();
        let status = response.status().as_u16();
        if let Some(metrics) = &self.metrics {
            self.observe(metrics, method_label(req.method()), route, status, elapsed);
        }
        if let Some(target) = target {
            let extensions = req.extensions();
            let caller = extensions.get::<LoggedCaller>();
            tracing::info!(
                target: ACCESS_LOG,
                request_id = id.as_str(),
                method = %req.method(),
                route,
                uri = %target,
                status,
                latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                user_id = caller.map(|c| c.user.id.as_str()),
                key_id = caller.and_then(|c| c.key_id.as_deref()),
                "request"
            );
        }
    }

    fn observe(
        &self,
        metrics: &Metrics,
        method: &'static str,
        route: &str,
        status: u16,
        elapsed: Duration,
    ) {
        let mut series = self.series.borrow_mut();
        let of_route = match series.get_mut(route) {
            Some(of_route) => of_route,
            None => series.entry(route.to_string()).or_default(),
        };
        match of_route
            .iter()
            .find(|(m, s, _)| *m == method && *s == status)
        {
            Some((_, _, handles)) => handles.observe(elapsed),
            None => {
                let handles = metrics.http_series(method, route, status);
                handles.observe(elapsed);
                of_route.push((method, status, handles));
            }
        }
    }
}

/// A bounded method label: the methods the API has, and `other`.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
    ]
    .iter()
    .zip(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
    .find(|(known, _)| *known == method)
    .map_or("other", |(_, label)| label)
}

/// A running server: its address and the means to stop it.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// The metrics listener's address (`KEYGATE_METRICS_ADDR`), if any.
    pub metrics_addr: Option<SocketAddr>,
    pub state: Services,
    handle: actix_web::dev::ServerHandle,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    metrics_server: Option<actix_web::dev::ServerHandle>,
    flusher: tokio::task::JoinHandle<()>,
    stop_flusher: std::sync::Arc<tokio::sync::Notify>,
    syncer: tokio::task::JoinHandle<()>,
    stop_syncer: std::sync::Arc<tokio::sync::Notify>,
    /// Deletes audit events past their retention.
    pruner: audit::retention::Pruner,
}

impl RunningServer {
    /// Stops accepting, lets requests finish, then writes pending counts.
    pub async fn stop(self) -> Result<(), String> {
        self.handle.stop(true).await;
        self.finish().await
    }

    /// Waits until the server ends by itself (after SIGTERM or SIGINT, see
    /// [`RunningServer::stop_on_signals`]), then writes pending counts.
    pub async fn wait(mut self) -> Result<(), String> {
        let result = (&mut self.server).await;
        let finish = self.finish().await;
        match result {
            Ok(Ok(())) => finish,
            Ok(Err(e)) => Err(format!("server error: {e}")),
            Err(e) => Err(format!("server task failed: {e}")),
        }
    }

    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.handle.clone()
    }

    /// The graceful shutdown, begun by a signal: `/ready` answers 503 at
    /// once while requests are still served for
    /// `KEYGATE_SHUTDOWN_DRAIN_SECONDS` (so load balancers take this
    /// instance out), or until `cut_short` resolves; then the server stops
    /// accepting and lets requests in flight finish (for at most
    /// `KEYGATE_SHUTDOWN_TIMEOUT_SECONDS`). [`RunningServer::wait`] then
    /// writes the usage counts.
    pub fn shutdown(&self, cut_short: impl std::future::Future<Output = ()> + 'static) {
        begin_shutdown(&self.state.core, self.handle.clone(), cut_short);
    }

    /// Shuts down gracefully ([`RunningServer::shutdown`]) on SIGTERM or
    /// SIGINT; a second one ends the drain at once. The handlers are
    /// registered before this returns, so an early signal is never lost.
    #[cfg(unix)]
    pub fn stop_on_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let (first, first_seen) = tokio::sync::oneshot::channel::<&'static str>();
        let (again, again_seen) = tokio::sync::oneshot::channel::<()>();
        actix_web::rt::spawn(async move {
            let mut first = Some(first);
            let mut again = Some(again);
            loop {
                let name = tokio::select! {
                    _ = terminate.recv() => "SIGTERM",
                    _ = interrupt.recv() => "SIGINT",
                };
                if let Some(first) = first.take() {
                    let _ = first.send(name);
                } else if let Some(again) = again.take() {
                    let _ = again.send(());
                }
            }
        });
        let (state, handle) = (self.state.core.clone(), self.handle.clone());
        actix_web::rt::spawn(async move {
            if let Ok(name) = first_seen.await {
                tracing::info!(signal = name, "shutting down gracefully");
                begin_shutdown(&state, handle, async move {
                    let _ = again_seen.await;
                });
            }
        });
        Ok(())
    }

    /// Stops the metrics listener and the periodic flusher (letting a
    /// write in progress finish), then writes what is left.
    async fn finish(self) -> Result<(), String> {
        if let Some(metrics) = &self.metrics_server {
            metrics.stop(true).await;
        }
        self.stop_flusher.notify_one();
        self.stop_syncer.notify_one();
        let _ = self.flusher.await;
        let _ = self.syncer.await;
        if let Err(e) = self.state.limits.sync().await {
            tracing::warn!(error = %e, "rate-limit counts not shared at shutdown");
        }
        self.pruner.stop().await;
        let flushed = self.state.usage.flush().await;
        self.state.core.stop_background();
        let flushed = flushed
            .map_err(|e| format!("could not write usage counts at shutdown: {}", e.detail()))?;
        tracing::info!(keys = flushed, "usage counters flushed at shutdown");
        Ok(())
    }
}

/// See [`RunningServer::shutdown`].
fn begin_shutdown(
    state: &AppState,
    handle: actix_web::dev::ServerHandle,
    cut_short: impl std::future::Future<Output = ()> + 'static,
) {
    let shutting_down = state.shutting_down.clone();
    let drain = state.config.shutdown_drain;
    actix_web::rt::spawn(async move {
        shutting_down.store(true, Ordering::SeqCst);
        tracing::info!(
            drain_seconds = drain.as_secs(),
            "shutting down: /ready answers 503; still serving while load balancers notice"
        );
        tokio::select! {
            _ = tokio::time::sleep(drain) => {}
            _ = cut_short => tracing::info!("drain cut short"),
        }
        tracing::info!("no longer accepting connections; finishing requests in flight");
        handle.stop(true).await;
    });
}

/// Binds `host:port` (port 0 picks a free one) and starts serving.
pub async fn start(core: AppState) -> Result<RunningServer, String> {
    let state = Services::new(core);
    let config = state.core.config.clone();
    let allowed_hosts = config.allowed_hosts();
    if allowed_hosts == AllowedHosts::Unset {
        tracing::warn!(
            host = %config.host,
            "keygate listens on a non-loopback address and KEYGATE_ALLOWED_HOSTS is unset: \
             every Host is answered and auto-login is refused; set it to the names clients use"
        );
    }
    let app_config = configure(&state);
    let request_metrics =
        (config.metrics != MetricsEndpoint::Off).then(|| state.core.metrics.clone());
    let body_timeout = config.body_timeout;
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(auth::resolve))
            .wrap(ErrorHandlers::new().default_handler(json_error_body))
            .wrap_fn({
                // What every request goes through before it is routed, in
                // one step: its id, the Host check, the body deadline, and
                // after the answer the access log and the metrics. One per
                // worker thread: its metric handles are its own.
                let observer = Rc::new(RequestObserver::new(request_metrics.clone()));
                let allowed_hosts = allowed_hosts.clone();
                move |mut req: ServiceRequest, srv| {
                    let id = RequestId::from_caller_or_new(req.headers().get(request_id::HEADER));
                    req.extensions_mut().insert(id.clone());
                    // Built only when the access log is on (it re-encodes
                    // the query to redact keys).
                    let target = tracing::enabled!(target: ACCESS_LOG, tracing::Level::INFO)
                        .then(|| redacted_target(req.path(), req.query_string()));
                    let started = Instant::now();
                    let span = tracing::info_span!(
                        target: REQUEST_SPAN,
                        "request",
                        request_id = id.as_str()
                    );
                    let (answer, deadline) = match host_refusal(&allowed_hosts, &req) {
                        Some(refusal) => (
                            Either::Left(std::future::ready(Ok(req
                                .error_response(refusal)
                                .map_into_right_body()))),
                            None,
                        ),
                        None => {
                            let deadline = crate::deadline::arm(&mut req, body_timeout);
                            let answer = srv.call(req).map_ok(ServiceResponse::map_into_left_body);
                            (Either::Right(answer), deadline)
                        }
                    };
                    let answer = answer.instrument(span);
                    let observer = observer.clone();
                    async move {
                        let mut response: ServiceResponse<EitherBody<_>> = answer.await?;
                        if deadline.is_some_and(|deadline| deadline.expired()) {
                            let (request, _) = response.into_parts();
                            response = crate::deadline::timed_out(request).map_into_right_body();
                        }
                        response.headers_mut().insert(
                            header::HeaderName::from_static(request_id::HEADER),
                            id.header_value().clone(),
                        );
                        observer.finish(&response, &id, target, started.elapsed());
                        Ok(response)
                    }
                }
            })
            .wrap(security_headers())
            .configure(app_config.clone())
    })
    // Streamed answers (the gateway) are written in several small pieces;
    // with Nagle's algorithm on, each waits for the client's delayed ACK
    // (40 ms on Linux). Every answer here is complete when written.
    .on_connect(|connection, _| {
        if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
            let _ = tcp.set_nodelay(true);
        }
    })
    .shutdown_timeout(config.shutdown_timeout.as_secs())
    // A caller that closes its connection is gone: stop at once, which
    // drops a streamed run's upstream response and so cancels the upstream
    // request (with half-closed connections allowed, actix would keep
    // streaming until a write failed).
    .h1_allow_half_closed(false)
    // Signals are handled by `serve` (see `RunningServer::stop_on_signals`), installed
    // before it reports readiness, so an early SIGTERM is never lost.
    .disable_signals();
    if let Some(workers) = config.workers {
        server = server.workers(workers);
    }
    let server = server
        .bind((config.host.as_str(), config.port))
        .map_err(|e| format!("cannot listen on {}:{}: {e}", config.host, config.port))?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| "the server bound no address".to_string())?;
    let server = server.run();
    let handle = server.handle();
    let server = actix_web::rt::spawn(server);
    let (metrics_server, metrics_addr) = match &config.metrics {
        MetricsEndpoint::Separate(at) => {
            let (metrics_handle, bound) = start_metrics_listener(&state.core, at)?;
            (Some(metrics_handle), Some(bound))
        }
        _ => (None, None),
    };

    let usage = state.usage.clone();
    let interval = config.usage_flush_interval;
    let stop_flusher = std::sync::Arc::new(tokio::sync::Notify::new());
    let stop_signal = stop_flusher.clone();
    let flusher = actix_web::rt::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop_signal.notified() => return,
            }
            if let Err(e) = usage.flush().await {
                tracing::warn!(error = %e, "usage counters not written; will retry");
            }
        }
    });
    let limits = state.limits.clone();
    let interval = config.rate_limit_sync_interval;
    let stop_syncer = std::sync::Arc::new(tokio::sync::Notify::new());
    let stop_signal = stop_syncer.clone();
    let syncer = actix_web::rt::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop_signal.notified() => return,
            }
            if let Err(e) = limits.sync().await {
                tracing::warn!(error = %e, "rate-limit counts not shared; will retry");
            }
        }
    });
    let pruner =
        audit::retention::Pruner::start(state.core.pool.clone(), config.audit_retention_days);
    Ok(RunningServer {
        addr,
        metrics_addr,
        state,
        handle,
        server,
        metrics_server,
        flusher,
        stop_flusher,
        syncer,
        stop_syncer,
        pruner,
    })
}

/// The listener of `KEYGATE_METRICS_ADDR`: `/metrics` and nothing else,
/// without credentials (it is meant for a private address), one worker.
fn start_metrics_listener(
    core: &AppState,
    at: &str,
) -> Result<(actix_web::dev::ServerHandle, SocketAddr), String> {
    let data = web::Data::new(core.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .wrap(ErrorHandlers::new().default_handler(json_error_body))
            .wrap(security_headers())
            .route("/metrics", web::get().to(open_metrics))
            .default_service(web::to(not_found))
    })
    .workers(1)
    .shutdown_timeout(1)
    .disable_signals()
    .bind(at)
    .map_err(|e| format!("cannot listen on {at} (KEYGATE_METRICS_ADDR): {e}"))?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| "the metrics listener bound no address".to_string())?;
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    tracing::info!(addr = %addr, "metrics listening");
    Ok((handle, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-abcdefghijabcdefghijabcdefghijabcdefghij123";

    fn percent_encode_all(text: &str) -> String {
        text.bytes().map(|b| format!("%{b:02X}")).collect()
    }

    #[test]
    fn redacts_keys_from_query() {
        let target = redacted_target("/api/v1/run/x", &format!("x-api-key={KEY}&stream=true"));
        assert_eq!(target, "/api/v1/run/x?x-api-key=REDACTED&stream=true");
        assert_eq!(
            redacted_target("/p", &format!("other={KEY}")),
            "/p?other=REDACTED"
        );
        // A key parameter is hidden whatever its value looks like.
        assert_eq!(
            redacted_target("/p", "X-Api-Key=not-a-key&x%2Dapi-key=junk"),
            "/p?X-Api-Key=REDACTED&x%2Dapi-key=REDACTED"
        );
    }

    #[test]
    fn redacts_keys_in_every_shape() {
        let cases = [
            (format!("/api/v1/run/{KEY}"), String::new()),
            (format!("/api/v1/run/{KEY}/more"), String::new()),
            ("/p".to_string(), format!("{KEY}=1")),
            ("/p".to_string(), format!("a=1%26x-api-key%3D{KEY}")),
            ("/p".to_string(), format!("a=%73k-{}", &KEY[3..])),
            ("/p".to_string(), format!("a=%2573k%2D{}", &KEY[3..])),
            ("/p".to_string(), format!("a={}", percent_encode_all(KEY))),
            (
                format!("/api/v1/run/{}", percent_encode_all(KEY)),
                String::new(),
            ),
            ("/p".to_string(), format!("a=x,{}", KEY.to_uppercase())),
        ];
        for (path, query) in cases {
            let target = redacted_target(&path, &query);
            assert!(target.contains("REDACTED"), "{path}?{query} -> {target}");
            for fragment in [&KEY[3..20], &KEY[25..], "abcdefghij", "ABCDEFGHIJ"] {
                assert!(!target.contains(fragment), "{path}?{query} -> {target}");
                assert!(
                    !target.contains(&percent_encode_all(fragment)),
                    "{path}?{query} -> {target}"
                );
            }
        }
    }

    #[test]
    fn keeps_what_is_not_a_key() {
        for (path, query) in [
            ("/api/v1/flows/task-management-flow", ""),
            ("/api/v1/run/my-flow", "stream=true&tweaks=%7B%7D"),
            ("/p", "a=sk-short"),
            ("/p", "a=%zz&b=%"),
            ("/p", "%25%25%2"),
        ] {
            let expected = if query.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{query}")
            };
            assert_eq!(redacted_target(path, query), expected);
        }
    }
}
