//! The gateway: `POST /api/v1/run/{flow}` (and Langflow's older
//! `/api/v1/process/{flow}`) forwarded to the flow's upstream with the
//! owner's stored credential injected, the answer streamed back.
//!
//! Who may run what (the key itself was checked by `auth::resolve`):
//! - an `sk-` key runs its owner's flows, found by id or endpoint name, and
//!   other users' public flows like anyone; a flow-bound key runs only its
//!   own flow (any other: 404, like another user's private flow, so ids
//!   cannot be probed);
//! - without a key, a flow marked `"access": "public"` runs as long as no
//!   usable flow-bound key exists for it; anything else asks for a key (401).
//!
//! Forwarding copies the flow's configured method, the body bytes,
//! `Content-Type`, `Accept`, the request's `X-Request-Id` (see
//! `request_id`) and the caller's query string minus `x-api-key`;
//! nothing else of the caller's request (no cookie, no
//! `Authorization`, no key) reaches the upstream. The answer's status,
//! content type and body are streamed back chunk by chunk (server-sent
//! events included); when the caller goes away the response stream, and
//! with it the upstream request, is dropped.
//!
//! A flow whose upstream is a Langflow server (`"upstream": {"langflow":
//! {"url", "flow_id"}}`) also answers the rest of Langflow's per-flow
//! routes, each sent to the same route on that server: the advanced run,
//! the webhook, and file upload (streamed, see `upload`). Langflow's id of
//! the flow never reaches the caller: answers carry keygate's id instead,
//! and keygate's id in a run or webhook body is sent upstream as
//! Langflow's (see `rewrite`).

mod rewrite;
mod secrets;
mod upload;

use actix_web::body::SizedStream;
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, HttpResponse};
use futures_util::TryStreamExt;

use std::sync::Arc;

use secrecy::ExposeSecret;

use crate::error::AppError;
use crate::flows::cache::{FlowCache, RunnableFlow};
use crate::flows::upstream::Target;
use crate::flows::{Injection, Upstream};
use crate::identity::{FlowCaller, Principal, API_KEY_QUERY};
use crate::metrics::UpstreamResult;
use crate::outbound::{Endpoint, ForwardBody};
use crate::request_id::{self, RequestId};
use crate::state::AppState;

pub use secrets::{Secret, SecretCache};

pub const RUN_NEEDS_KEY: &str = "An API key must be passed as the x-api-key header \
    or the x-api-key query parameter";

/// `/run` and `/process` each under a scope of its own: a request for any
/// other route passes them by comparing the static prefix, without running
/// the `{flow}` pattern's regular expression.
/// The hottest routes, mounted at the root before the `/api/v1` scope
/// (see `server::configure`): `/run/{flow}` and `/run/advanced/{flow}` are
/// told apart by `run_routes` comparing strings, where actix would run a
/// regular expression per `{flow}` pattern (about a tenth of a run's
/// instructions).
pub fn hot_routes(cfg: &mut web::ServiceConfig) {
    for path in ["/run/advanced/{flow}", "/run/{flow}"] {
        crate::routing::record_api("post", path);
    }
    cfg.service(
        web::scope(concat!(crate::routing::api_prefix!(), "/run"))
            .default_service(web::to(run_routes)),
    );
}

/// The other per-flow routes, inside the `/api/v1` scope.
pub fn routes(cfg: &mut web::ServiceConfig) {
    for path in ["/process/{flow}", "/webhook/{flow}", "/files/upload/{flow}"] {
        crate::routing::record_api("post", path);
    }
    cfg.service(
        web::scope("/process")
            .route("/{flow}", web::post().to(run))
            .route("/{flow}/", web::post().to(run)),
    );
    // Every per-flow route sits under a static scope: a request for any
    // other route passes these by a prefix comparison, without running the
    // `{flow}` patterns (regular expressions) of each.
    cfg.service(
        web::scope("/webhook")
            .route("/{flow}", web::post().to(webhook))
            .route("/{flow}/", web::post().to(webhook)),
    );
    cfg.service(
        web::scope("/files/upload")
            .route("/{flow}", web::post().to(upload_file))
            .route("/{flow}/", web::post().to(upload_file)),
    );
}

/// Which of Langflow's per-flow routes a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Run,
    Advanced,
    Webhook,
    Upload,
}

impl Route {
    /// The route's path on a Langflow server, before the flow id.
    fn langflow_path(self) -> &'static str {
        match self {
            Route::Run => "run",
            Route::Advanced => "run/advanced",
            Route::Webhook => "webhook",
            Route::Upload => "files/upload",
        }
    }

    /// Where the route's checked upstream URL is kept in the cached flow
    /// (`RunnableFlow::upstream_urls`).
    fn slot(self) -> usize {
        match self {
            Route::Run => 0,
            Route::Advanced => 1,
            Route::Webhook => 2,
            Route::Upload => 3,
        }
    }

    /// How the caller wrote it, for error messages.
    fn caller_path(self) -> &'static str {
        match self {
            Route::Run => "/api/v1/run",
            Route::Advanced => "/api/v1/run/advanced",
            Route::Webhook => "/api/v1/webhook",
            Route::Upload => "/api/v1/files/upload",
        }
    }
}

fn flow_not_found(identifier: &str) -> AppError {
    AppError::not_found(format!("Flow identifier {identifier} not found"))
}

/// The services every gateway route uses, borrowed from the request's app
/// data (a run clones none of them).
pub struct Gateway<'r> {
    state: &'r AppState,
    flows: &'r FlowCache,
    vault: &'r SecretCache,
}

impl<'r> Gateway<'r> {
    fn of(req: &'r HttpRequest) -> Result<Self, AppError> {
        let missing = || AppError::internal("gateway services missing");
        Ok(Gateway {
            state: req.app_data::<web::Data<AppState>>().ok_or_else(missing)?,
            flows: req.app_data::<web::Data<FlowCache>>().ok_or_else(missing)?,
            vault: req
                .app_data::<web::Data<SecretCache>>()
                .ok_or_else(missing)?,
        })
    }
}

/// A call's flow, its upstream and the owner's secret, once the caller
/// has been allowed to make it.
pub struct Prepared {
    flow: Arc<RunnableFlow>,
    secret: Option<Arc<Secret>>,
}

impl Prepared {
    fn upstream(&self) -> Result<&Upstream, AppError> {
        self.flow
            .upstream
            .as_ref()
            .ok_or_else(|| AppError::internal("prepared flow lost its upstream"))
    }
}

impl Gateway<'_> {
    /// Finds the flow the caller may call on `route`, checks it has an
    /// upstream that serves the route, and fetches the owner's secret.
    /// Nothing of the request body has been read yet.
    async fn prepare(
        &self,
        caller: FlowCaller,
        identifier: &str,
        route: Route,
    ) -> Result<Prepared, AppError> {
        let flow = resolve_flow(self.flows, caller.0, identifier).await?;
        let Some(upstream) = &flow.upstream else {
            return Err(AppError::unprocessable(format!(
                "Flow {} has no upstream to run it; set \"upstream\" with PATCH /api/v1/flows/{}",
                flow.id, flow.id
            )));
        };
        if route != Route::Run && matches!(upstream.target()?, Target::Url { .. }) {
            return Err(AppError::unprocessable(format!(
                "{} needs a flow whose upstream is a Langflow server (\"upstream\": {{\"langflow\": {{\"url\", \"flow_id\"}}}}); flow {} has a single upstream URL",
                route.caller_path(),
                flow.id
            )));
        }
        let secret = match &upstream.credential {
            Some(credential) => Some(
                self.vault
                    .fetch(self.state, &flow.user_id, credential)
                    .await?,
            ),
            None => None,
        };
        Ok(Prepared { flow, secret })
    }

    /// A call with a body that fits in memory (run, advanced run, webhook).
    async fn call(
        &self,
        caller: FlowCaller,
        req: &HttpRequest,
        identifier: &str,
        route: Route,
        body: web::Bytes,
    ) -> Result<HttpResponse, AppError> {
        let prepared = self.prepare(caller, identifier, route).await?;
        let body = match prepared.upstream()?.target()? {
            // keygate's id in a body (a session id, a file path from an
            // upload) is Langflow's id upstream.
            Target::Langflow(target) => {
                rewrite::replace_all(&body, &prepared.flow.id, &target.flow_id)
            }
            Target::Url { .. } => body,
        };
        forward(self.state, req, &prepared, route, OutBody::Bytes(body)).await
    }
}

/// `POST /api/v1/run/{flow}` and `POST /api/v1/run/advanced/{flow}` (each
/// also with a trailing `/`), matched without regular expressions. Any
/// other path under `/api/v1/run` is the API's 404 and another method a
/// 405, before the caller or the body is looked at, as for every route.
async fn run_routes(
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let rest = req
        .path()
        .strip_prefix(RUN_PREFIX)
        .map(|rest| rest.strip_suffix('/').unwrap_or(rest));
    let (route, flow, template) = match rest.and_then(|rest| rest.split_once('/')) {
        None => (Route::Run, rest, "/api/v1/run/{flow}"),
        Some(("advanced", flow)) => (Route::Advanced, Some(flow), "/api/v1/run/advanced/{flow}"),
        Some(_) => (Route::Run, None, ""),
    };
    let Some(flow) = flow.filter(|flow| !flow.is_empty() && !flow.contains('/')) else {
        return Err(AppError::not_found("Not Found").into());
    };
    if req.method() != actix_web::http::Method::POST {
        return Ok(HttpResponse::MethodNotAllowed().finish());
    }
    // actix knows no template for a scope's default service.
    req.extensions_mut()
        .insert(crate::routing::RouteTemplate(template));
    let identifier = percent_encoding::percent_decode_str(flow).decode_utf8_lossy();
    let mut payload = payload.into_inner();
    let gateway = Gateway::of(&req)?;
    let caller = FlowCaller::extract(&req).await?;
    let body = web::Bytes::from_request(&req, &mut payload).await?;
    Ok(match route {
        Route::Advanced => run_advanced(gateway, caller, &req, &identifier, body).await?,
        _ => gateway.call(caller, &req, &identifier, route, body).await?,
    })
}

const RUN_PREFIX: &str = "/api/v1/run/";

/// Also `POST /api/v1/process/{flow}` (`openapi` describes it alike).
#[utoipa::path(post, path = "/api/v1/run/{flow}", tag = "runs", params(("flow" = String, Path, description = "The flow's id or endpoint name")), request_body(content = Option<Value>, description = "Forwarded unchanged, whatever its content type", content_type = "application/json"), responses((status = "default", description = "The upstream's answer, relayed as it came (any status, body and content type); keygate's own refusals are `{\"detail\": …}`")), security((), ("api_key_header" = []), ("api_key_query" = [])))]
async fn run(
    caller: FlowCaller,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    Gateway::of(&req)?
        .call(caller, &req, &path, Route::Run, body)
        .await
}

#[utoipa::path(post, path = "/api/v1/run/advanced/{flow}", tag = "runs", params(("flow" = String, Path, description = "The flow's id or endpoint name")), request_body(content = Option<Value>, description = "Forwarded unchanged, whatever its content type", content_type = "application/json"), responses((status = "default", description = "The upstream's answer, relayed as it came (any status, body and content type); keygate's own refusals are `{\"detail\": …}`")), security((), ("api_key_header" = []), ("api_key_query" = [])))]
async fn run_advanced(
    gateway: Gateway<'_>,
    caller: FlowCaller,
    req: &HttpRequest,
    identifier: &str,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    gateway
        .call(caller, req, identifier, Route::Advanced, body)
        .await
}

#[utoipa::path(post, path = "/api/v1/webhook/{flow}", tag = "runs", params(("flow" = String, Path, description = "The flow's id or endpoint name")), request_body(content = Option<Value>, description = "Forwarded unchanged, whatever its content type", content_type = "application/json"), responses((status = "default", description = "The upstream's answer, relayed as it came (any status, body and content type); keygate's own refusals are `{\"detail\": …}`")), security((), ("api_key_header" = []), ("api_key_query" = [])))]
async fn webhook(
    caller: FlowCaller,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    Gateway::of(&req)?
        .call(caller, &req, &path, Route::Webhook, body)
        .await
}

/// `POST /api/v1/files/upload/{flow}`: the caller is checked and the flow
/// found before a byte of the body is read; the body then goes to
/// Langflow's own upload route chunk by chunk, never held whole.
#[utoipa::path(post, path = "/api/v1/files/upload/{flow}", tag = "runs", params(("flow" = String, Path, description = "The flow's id or endpoint name")),
    request_body(content = inline(Upload), description = "The file in the field `file`, streamed to Langflow", content_type = "multipart/form-data"),
    responses((status = "default", description = "The upstream's answer, relayed as it came (any status, body and content type); keygate's own refusals are `{\"detail\": …}`")), security((), ("api_key_header" = []), ("api_key_query" = [])))]
async fn upload_file(
    caller: FlowCaller,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let gateway = Gateway::of(&req)?;
    let limit = gateway.state.config.max_upload_bytes;
    upload::check_head(&req, limit)?;
    let prepared = gateway.prepare(caller, &path, Route::Upload).await?;
    let (body, refused) = upload::streamed(payload, limit);
    let body = OutBody::Stream { body, refused };
    forward(gateway.state, &req, &prepared, Route::Upload, body).await
}

/// A file upload's body, as the document describes it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the body; the handler streams it unread.
struct Upload {
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// Finds the flow the caller may run (see the module doc).
async fn resolve_flow(
    flows: &FlowCache,
    caller: Option<Principal>,
    identifier: &str,
) -> Result<Arc<RunnableFlow>, AppError> {
    match caller.filter(Principal::is_api_key) {
        Some(principal) => {
            let own = flows.own(&principal.user.id, identifier).await?;
            match (own, principal.bound_flow()) {
                (Some(flow), Some(bound)) if bound != flow.id => Err(flow_not_found(identifier)),
                (Some(flow), _) => Ok(flow),
                (None, Some(_)) => Err(flow_not_found(identifier)),
                // Not one of the owner's flows: another user's public flow
                // may still be run, as by anyone without a key.
                (None, None) => flows
                    .public(identifier)
                    .await?
                    .ok_or_else(|| flow_not_found(identifier)),
            }
        }
        // No key (a session is not a key): public flows only.
        None => flows
            .public(identifier)
            .await?
            .ok_or_else(|| AppError::unauthorized(RUN_NEEDS_KEY)),
    }
}

/// Response headers of the upstream that are passed back.
const FORWARDED_RESPONSE_HEADERS: [header::HeaderName; 5] = [
    header::CACHE_CONTROL,
    header::CONTENT_ENCODING,
    header::CONTENT_DISPOSITION,
    header::CONTENT_LANGUAGE,
    header::RETRY_AFTER,
];

/// The caller's query string without any `x-api-key` parameter, other
/// parameters kept byte for byte.
pub fn query_without_key(query: &str) -> String {
    if query.is_empty() {
        return String::new();
    }
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or_default();
            let decoded: String = form_urlencoded::parse(name.as_bytes())
                .map(|(n, _)| n.into_owned())
                .collect();
            !decoded.eq_ignore_ascii_case(API_KEY_QUERY)
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Where a route of the flow is sent. The URL is parsed, checked and
/// taken apart once per cached flow; the SSRF rule on the addresses a name
/// resolves to is applied at every connection (`outbound::forward`).
fn upstream_endpoint<'f>(
    state: &AppState,
    flow: &'f RunnableFlow,
    target: &Target<'_>,
    route: Route,
) -> Result<&'f Endpoint, AppError> {
    let slot = &flow.upstream_endpoints[route.slot()];
    if let Some(endpoint) = slot.get() {
        return Ok(endpoint);
    }
    let endpoint = match target {
        Target::Url { url, .. } => secrets::endpoint(state, url)?,
        Target::Langflow(langflow) => {
            secrets::endpoint(state, &langflow.route_url(route.langflow_path()))?
        }
    };
    Ok(slot.get_or_init(|| endpoint))
}

/// A request body for the upstream.
enum OutBody {
    Bytes(web::Bytes),
    /// Streamed as it arrives (a file upload); `refused` is set when the
    /// caller's body broke off or outgrew the limit.
    Stream {
        body: ForwardBody,
        refused: upload::Refusal,
    },
}

/// Request headers of the caller that are forwarded, by their names on
/// both sides (actix and the upstream client use different `http`
/// versions); everything else (hop-by-hop headers, Host, Cookie,
/// Authorization, x-api-key, …) stays.
const FORWARDED_REQUEST_HEADERS: [(header::HeaderName, hyper::header::HeaderName); 2] = [
    (header::CONTENT_TYPE, hyper::header::CONTENT_TYPE),
    (header::ACCEPT, hyper::header::ACCEPT),
];

async fn forward(
    state: &AppState,
    req: &HttpRequest,
    prepared: &Prepared,
    route: Route,
    body: OutBody,
) -> Result<HttpResponse, AppError> {
    let upstream = prepared.upstream()?;
    let secret = prepared.secret.as_deref();
    let target = upstream.target()?;
    let endpoint = upstream_endpoint(state, &prepared.flow, &target, route)?;
    let method = match target {
        Target::Url { method, .. } => hyper::Method::from_bytes(method.as_bytes())
            .map_err(|_| AppError::internal("stored upstream method unreadable"))?,
        Target::Langflow(_) => hyper::Method::POST,
    };
    let head = method == hyper::Method::HEAD;
    let (body, refused) = match body {
        OutBody::Bytes(body) => (ForwardBody::bytes(body), None),
        OutBody::Stream { body, refused } => (body, Some(refused)),
    };
    let mut request = hyper::Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = endpoint.target(&query_without_key(req.query_string()))?;
    let headers = request.headers_mut();
    for (name, upstream_name) in FORWARDED_REQUEST_HEADERS {
        for value in req.headers().get_all(&name) {
            if let Ok(value) = hyper::header::HeaderValue::from_bytes(value.as_bytes()) {
                headers.append(upstream_name.clone(), value);
            }
        }
    }
    if !headers.contains_key(hyper::header::ACCEPT) {
        headers.insert(hyper::header::ACCEPT, ANY_MEDIA_TYPE);
    }
    headers.insert(hyper::header::USER_AGENT, USER_AGENT);
    // The same id in keygate's log, its answer and the upstream's log.
    if let Some(id) = RequestId::of(req) {
        if let Ok(value) = hyper::header::HeaderValue::from_str(id.as_str()) {
            headers.insert(request_id::HEADER, value);
        }
    }
    if let (Some(secret), Some(credential)) = (secret, &upstream.credential) {
        inject(
            headers,
            secret,
            credential.injection(),
            credential.header.as_deref(),
        )?;
    }

    let timeout = state.config.upstream_timeout;
    let series = prepared.flow.upstream_series.get_or_init(|| {
        state
            .metrics
            .upstream_series(prepared.flow.endpoint_name.as_deref())
    });
    let sent = std::time::Instant::now();
    let response = tokio::time::timeout(
        timeout,
        state.outbound.forwarder().forward(endpoint, request),
    )
    .await;
    let result = match &response {
        Err(_) => UpstreamResult::Timeout,
        Ok(Err(_)) => UpstreamResult::Error,
        Ok(Ok(response)) => UpstreamResult::Status(response.status().as_u16()),
    };
    series.observe(result, sent.elapsed());
    let response = match response {
        Err(_) => {
            return Err(AppError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "Upstream timed out after {} ms without answering",
                    timeout.as_millis()
                ),
            ))
        }
        Ok(Err(error)) => {
            if let Some(refusal) = refused.as_ref().and_then(upload::Refusal::get) {
                return Err(refusal);
            }
            return Err(secrets::upstream_error(state, &error));
        }
        Ok(Ok(response)) => response,
    };

    let status = StatusCode::from_u16(response.status().as_u16()).map_err(|_| {
        AppError::new(
            StatusCode::BAD_GATEWAY,
            "Upstream answered an invalid status",
        )
    })?;
    let mut answer = HttpResponse::build(status);
    if let Some(content_type) = response.headers().get(hyper::header::CONTENT_TYPE) {
        answer.insert_header((header::CONTENT_TYPE, content_type.as_bytes()));
    }
    for name in FORWARDED_RESPONSE_HEADERS {
        if let Some(value) = response.headers().get(name.as_str()) {
            answer.insert_header((name, value.as_bytes()));
        }
    }
    let encoded = response
        .headers()
        .get(hyper::header::CONTENT_ENCODING)
        .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"));
    let body = response.into_body();
    let length = body.exact_length().filter(|_| has_body(head, status));
    let stream = body.map_err(|error| {
        tracing::warn!(%error, "upstream stream ended with an error");
        AppError::new(StatusCode::BAD_GATEWAY, "Upstream stream broke off")
    });
    // A body of announced length is relayed with that length (as nginx
    // does), not re-chunked; either way it is streamed, not buffered.
    let mut answer =
        match (target, length) {
            // Langflow's id of the flow becomes keygate's in the answer (a
            // compressed answer is passed on as it is).
            (Target::Langflow(langflow), _) if !encoded => answer.streaming(
                rewrite::rewrite_stream(stream, &langflow.flow_id, &prepared.flow.id),
            ),
            (_, Some(length)) => answer.body(SizedStream::new(length, stream)),
            _ => answer.streaming(stream),
        };
    answer.extensions_mut().insert(RelayedAnswer);
    Ok(answer)
}

/// What the shared client sent when the caller named no `Accept`.
const ANY_MEDIA_TYPE: hyper::header::HeaderValue = hyper::header::HeaderValue::from_static("*/*");

const USER_AGENT: hyper::header::HeaderValue =
    hyper::header::HeaderValue::from_static(concat!("keygate/", env!("CARGO_PKG_VERSION")));

/// Whether an answer with `status` (to a HEAD request if `head`) carries a
/// body (so its `Content-Length` is the body's length).
fn has_body(head: bool, status: StatusCode) -> bool {
    !head
        && !status.is_informational()
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::NOT_MODIFIED
}

/// Marks a response as the upstream's own answer, which the server's JSON
/// error rewriting must leave alone (an upstream 4xx/5xx keeps its body).
#[derive(Debug, Clone, Copy)]
pub struct RelayedAnswer;

/// Adds the owner's secret to the upstream request as the flow says.
fn inject(
    headers: &mut hyper::HeaderMap,
    secret: &Secret,
    how: Injection,
    header_name: Option<&str>,
) -> Result<(), AppError> {
    let sensitive = |text: &str| {
        let mut value = hyper::header::HeaderValue::from_str(text).map_err(|_| {
            AppError::unprocessable(
                "The stored credential cannot be sent in an HTTP header (it contains invalid characters)",
            )
        })?;
        value.set_sensitive(true);
        Ok::<_, AppError>(value)
    };
    match how {
        Injection::Bearer => {
            let value = sensitive(&format!("Bearer {}", secret.secret.expose_secret()))?;
            headers.insert(hyper::header::AUTHORIZATION, value);
        }
        Injection::Basic => {
            use base64::Engine;
            let pair = format!(
                "{}:{}",
                secret.public.as_deref().unwrap_or_default(),
                secret.secret.expose_secret()
            );
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
            let value = sensitive(&format!("Basic {encoded}"))?;
            headers.insert(hyper::header::AUTHORIZATION, value);
        }
        Injection::Header => {
            let name = header_name
                .ok_or_else(|| AppError::internal("stored upstream lacks its header name"))?;
            let name = hyper::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                AppError::unprocessable(format!(
                    "The flow's credential header name {name:?} is not a valid HTTP header name"
                ))
            })?;
            headers.insert(name, sensitive(secret.secret.expose_secret())?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_only_the_key_from_the_query() {
        assert_eq!(
            query_without_key("x-api-key=sk-abc&stream=true&q=a%20b+c"),
            "stream=true&q=a%20b+c"
        );
        assert_eq!(query_without_key("X-API-KEY=sk-abc"), "");
        assert_eq!(query_without_key("x%2Dapi%2Dkey=sk-abc&a=1"), "a=1");
        assert_eq!(query_without_key(""), "");
        assert_eq!(query_without_key("a=1&&b"), "a=1&b");
    }
}
