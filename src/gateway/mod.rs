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
//! `Content-Type`, `Accept` and the caller's query string minus
//! `x-api-key`; nothing else of the caller's request (no cookie, no
//! `Authorization`, no key) reaches the upstream. The answer's status,
//! content type and body are streamed back chunk by chunk (server-sent
//! events included); when the caller goes away the response stream, and
//! with it the upstream request, is dropped.

mod secrets;

use actix_web::body::SizedStream;
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::TryStreamExt;

use std::sync::Arc;

use secrecy::ExposeSecret;

use crate::error::AppError;
use crate::flows::cache::{FlowCache, RunnableFlow};
use crate::flows::{Injection, Upstream};
use crate::identity::{FlowCaller, Principal, API_KEY_QUERY};
use crate::state::AppState;

pub use secrets::{Secret, SecretCache};

pub const RUN_NEEDS_KEY: &str = "An API key must be passed as the x-api-key header \
    or the x-api-key query parameter";

/// Each under a scope of its own: a request for any other route passes
/// them by comparing the static prefix, without running the `{flow}`
/// pattern's regular expression.
pub fn routes(cfg: &mut web::ServiceConfig) {
    for prefix in ["/run", "/process"] {
        cfg.service(
            web::scope(prefix)
                .route("/{flow}", web::post().to(run))
                .route("/{flow}/", web::post().to(run)),
        );
    }
}

fn flow_not_found(identifier: &str) -> AppError {
    AppError::not_found(format!("Flow identifier {identifier} not found"))
}

async fn run(
    state: web::Data<AppState>,
    flows: web::Data<FlowCache>,
    vault: web::Data<SecretCache>,
    caller: FlowCaller,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    let identifier = path.into_inner();
    let flow = resolve_flow(&flows, caller.0, &identifier).await?;
    let upstream = match &flow.upstream {
        Some(upstream) => upstream,
        None => {
            return Err(AppError::unprocessable(format!(
                "Flow {} has no upstream to run it; set \"upstream\" with PATCH /api/v1/flows/{}",
                flow.id, flow.id
            )))
        }
    };
    let secret = match &upstream.credential {
        Some(credential) => Some(vault.fetch(&state, &flow.user_id, credential).await?),
        None => None,
    };
    forward(&state, &req, upstream, secret.as_deref(), body).await
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

/// Request headers of the caller that are forwarded; everything else
/// (hop-by-hop headers, Host, Cookie, Authorization, x-api-key, …) stays.
const FORWARDED_REQUEST_HEADERS: [header::HeaderName; 2] = [header::CONTENT_TYPE, header::ACCEPT];

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

/// The upstream URL with the caller's query appended to its own.
fn upstream_url(
    state: &AppState,
    upstream: &Upstream,
    caller_query: &str,
) -> Result<reqwest::Url, AppError> {
    let mut url = secrets::check_url(state, &upstream.url)?;
    let extra = query_without_key(caller_query);
    if !extra.is_empty() {
        let query = match url.query().filter(|q| !q.is_empty()) {
            Some(own) => format!("{own}&{extra}"),
            None => extra,
        };
        url.set_query(Some(&query));
    }
    Ok(url)
}

async fn forward(
    state: &AppState,
    req: &HttpRequest,
    upstream: &Upstream,
    secret: Option<&Secret>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    let url = upstream_url(state, upstream, req.query_string())?;
    let method = reqwest::Method::from_bytes(upstream.method.as_bytes())
        .map_err(|_| AppError::internal("stored upstream method unreadable"))?;
    let mut request = secrets::client(state).request(method, url);
    for name in FORWARDED_REQUEST_HEADERS {
        for value in req.headers().get_all(&name) {
            request = request.header(name.as_str(), value.as_bytes());
        }
    }
    if let (Some(secret), Some(credential)) = (secret, &upstream.credential) {
        request = inject(
            request,
            secret,
            credential.inject,
            credential.header.as_deref(),
        )?;
    }
    if !body.is_empty() {
        request = request.body(body);
    }

    let timeout = state.config.upstream_timeout;
    let response = match tokio::time::timeout(timeout, request.send()).await {
        Err(_) => {
            return Err(AppError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "Upstream timed out after {} ms without answering",
                    timeout.as_millis()
                ),
            ))
        }
        Ok(Err(error)) => return Err(secrets::upstream_error(state, &error)),
        Ok(Ok(response)) => response,
    };

    let status = StatusCode::from_u16(response.status().as_u16()).map_err(|_| {
        AppError::new(
            StatusCode::BAD_GATEWAY,
            "Upstream answered an invalid status",
        )
    })?;
    let mut answer = HttpResponse::build(status);
    if let Some(content_type) = response.headers().get(reqwest::header::CONTENT_TYPE) {
        answer.insert_header((header::CONTENT_TYPE, content_type.as_bytes()));
    }
    for name in FORWARDED_RESPONSE_HEADERS {
        if let Some(value) = response.headers().get(name.as_str()) {
            answer.insert_header((name, value.as_bytes()));
        }
    }
    let length = response
        .content_length()
        .filter(|_| has_body(&upstream.method, status));
    let stream = response.bytes_stream().map_err(|error| {
        tracing::warn!(error = %error.without_url(), "upstream stream ended with an error");
        AppError::new(StatusCode::BAD_GATEWAY, "Upstream stream broke off")
    });
    // A body of announced length is relayed with that length (as nginx
    // does), not re-chunked; either way it is streamed, not buffered.
    let mut answer = match length {
        Some(length) => answer.body(SizedStream::new(length, stream)),
        None => answer.streaming(stream),
    };
    answer.extensions_mut().insert(RelayedAnswer);
    Ok(answer)
}

/// Whether an answer to `method` with `status` carries a body (so its
/// `Content-Length` is the body's length).
fn has_body(method: &str, status: StatusCode) -> bool {
    !method.eq_ignore_ascii_case("HEAD")
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
    request: reqwest::RequestBuilder,
    secret: &Secret,
    how: Injection,
    header_name: Option<&str>,
) -> Result<reqwest::RequestBuilder, AppError> {
    let sensitive = |text: String| {
        let mut value = reqwest::header::HeaderValue::from_str(&text).map_err(|_| {
            AppError::unprocessable(
                "The stored credential cannot be sent in an HTTP header (it contains invalid characters)",
            )
        })?;
        value.set_sensitive(true);
        Ok::<_, AppError>(value)
    };
    Ok(match how {
        Injection::Bearer => {
            let value = sensitive(format!("Bearer {}", secret.secret.expose_secret()))?;
            request.header(reqwest::header::AUTHORIZATION, value)
        }
        Injection::Basic => {
            use base64::Engine;
            let pair = format!(
                "{}:{}",
                secret.public.as_deref().unwrap_or_default(),
                secret.secret.expose_secret()
            );
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
            let value = sensitive(format!("Basic {encoded}"))?;
            request.header(reqwest::header::AUTHORIZATION, value)
        }
        Injection::Header => {
            let name = header_name
                .ok_or_else(|| AppError::internal("stored upstream lacks its header name"))?;
            let value = sensitive(secret.secret.expose_secret().to_string())?;
            request.header(name, value)
        }
    })
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
