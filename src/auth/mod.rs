//! The one place a request becomes "who is this".
//!
//! [`resolve`] is a middleware on the whole app: it reads an `sk-` key from
//! the `x-api-key` header or the `x-api-key` query parameter, or else a
//! session (cookie or `Authorization: Bearer`), before any handler runs or
//! any body is read, and asks the domain that owns the credential
//! (`keys::authenticate_cached`, `sessions::authenticate`). A bad key is answered
//! at once (400/401); the outcome is left in the request
//! (`identity::Resolved`) for the extractors every protected handler takes.
//! Malformed input is refused before any database work; unknown, revoked,
//! expired, inactive keys and keys of inactive owners all get the same 401
//! body. A state-changing browser request on a cookie session must carry
//! the session's CSRF token.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, AUTHORIZATION};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest};
use std::borrow::Cow;
use std::sync::Arc;

use crate::error::AppError;
use crate::identity::{
    reason, reject, Credential, KeyPolicy, LoggedCaller, Principal, Resolved, Scope,
    API_KEY_HEADER, API_KEY_QUERY, FORBIDDEN_ADDRESS, INVALID_KEY,
};
use crate::keys::limits::{Verdict, RATE_LIMITED};
use crate::keys::verify::VerifiedKey;
use crate::keys::{self, CacheAnswer, KeyCaller, KeyVerifier};
use crate::metrics::KeyOutcome;
use crate::sessions;
use crate::state::AppState;
use crate::token::ApiKeyKind;
use crate::token::TokenKind;

pub mod throttle;

pub use throttle::KeyFailures;

pub const CSRF_REFUSED: &str = "Missing or invalid CSRF token";
/// The header a page sends its session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The authentication middleware (see the module doc). Key failures end
/// the request here; a stale session is only recorded, so sign-in and
/// sign-out still work with an old cookie.
pub async fn resolve<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let (outcome, key) = match authenticate(req.request()).await {
        Err(Failure::Key(error)) => {
            return Ok(req.error_response(error).map_into_right_body());
        }
        Err(Failure::Session(error)) => (Err(error), None),
        Ok(Some((principal, key))) => (Ok(Some(principal)), key),
        Ok(None) => (Ok(None), None),
    };
    let mut verdict = None;
    let address = key.as_ref().map(|used| {
        used.key.usage.record(used.at, used.address);
        used.address
    });
    let key = key.map(|used| used.key);
    if let Ok(Some(principal)) = &outcome {
        LoggedCaller::store(req.request(), principal);
        if let Err(error) = key_policy_allows(req.request(), principal, address) {
            let peeked = key
                .as_ref()
                .and_then(|k| k.limit.as_ref())
                .map(|l| l.peek());
            return Ok(refused(req, error, key.as_deref(), peeked));
        }
        if !csrf_satisfied(req.request(), principal) {
            let error = reject(
                "missing or invalid CSRF token",
                AppError::forbidden(CSRF_REFUSED),
            );
            return Ok(req.error_response(error).map_into_right_body());
        }
        if let Some(limit) = key.as_ref().and_then(|k| k.limit.as_ref()) {
            let admitted = limit.admit();
            if !admitted.allowed {
                let error = reject(
                    "key over its rate limit",
                    AppError::new(StatusCode::TOO_MANY_REQUESTS, RATE_LIMITED)
                        .retry_after(u32::try_from(admitted.reset).unwrap_or(u32::MAX))
                        .with_reason(reason::RATE_LIMITED),
                );
                record_outcome(req.request(), KeyOutcome::RateLimited);
                return Ok(refused(req, error, key.as_deref(), Some(admitted)));
            }
            verdict = Some(admitted);
        }
        if key.is_some() {
            record_outcome(req.request(), KeyOutcome::Valid);
        }
    }
    Resolved::store(req.request(), outcome);
    let mut res = crate::bus::confirming(next.call(req)).await?;
    if let Some(key) = &key {
        let reason = res
            .response()
            .error()
            .and_then(|error| error.as_error::<AppError>())
            .and_then(AppError::reason);
        count_refusal(key, reason);
    }
    if let Some(verdict) = verdict {
        rate_limit_headers(res.headers_mut(), verdict);
    }
    Ok(res.map_into_left_body())
}

/// The refusals a key's usage counts as `refused`: those of its own
/// policy, wherever they were decided (here or in a handler).
const POLICY_REFUSALS: [&str; 4] = [
    reason::RATE_LIMITED,
    reason::FORBIDDEN_ADDRESS,
    reason::MISSING_SCOPE,
    reason::FLOW_BOUND_KEY,
];

fn count_refusal(key: &VerifiedKey, reason: Option<&str>) {
    if reason.is_some_and(|reason| POLICY_REFUSALS.contains(&reason)) {
        key.usage.refuse(crate::db::now());
    }
}

/// The answer to a key the middleware refuses, counted in its usage, with
/// the `RateLimit-*` headers when the key is limited.
fn refused<B>(
    req: ServiceRequest,
    error: AppError,
    key: Option<&VerifiedKey>,
    verdict: Option<Verdict>,
) -> ServiceResponse<EitherBody<B>> {
    if let Some(key) = key {
        count_refusal(key, error.reason());
    }
    let mut res = req.error_response(error);
    if let Some(verdict) = verdict {
        rate_limit_headers(res.headers_mut(), verdict);
    }
    res.map_into_right_body()
}

/// The IETF httpapi rate-limit headers: the limit, what is left of it in
/// this window, and the seconds until the window ends.
fn rate_limit_headers(headers: &mut HeaderMap, verdict: Verdict) {
    for (name, value) in [
        ("ratelimit-limit", verdict.limit),
        ("ratelimit-remaining", verdict.remaining),
        ("ratelimit-reset", verdict.reset),
    ] {
        headers.insert(
            header::HeaderName::from_static(name),
            header::HeaderValue::from(value),
        );
    }
}

/// A key's own limits, from the cached key: the address it is used from
/// (`address`, after `KEYGATE_TRUSTED_PROXIES`) and the scope the route
/// needs. A refusal is counted in the metrics as the key's outcome; a key
/// that passes is counted once the rate limit has let it through.
fn key_policy_allows(
    req: &HttpRequest,
    principal: &Principal,
    address: Option<std::net::IpAddr>,
) -> Result<(), AppError> {
    let Credential::ApiKey {
        policy, flow_id, ..
    } = &principal.credential
    else {
        return Ok(());
    };
    key_policy_verdict(req, policy, flow_id.is_some(), address).map_err(|(error, outcome)| {
        record_outcome(req, outcome);
        error
    })
}

/// One key verification's outcome in the metrics.
fn record_outcome(req: &HttpRequest, outcome: KeyOutcome) {
    if let Some(verifier) = req.app_data::<web::Data<KeyVerifier>>() {
        verifier.outcomes().record(outcome);
    }
}

fn key_policy_verdict(
    req: &HttpRequest,
    policy: &KeyPolicy,
    flow_bound: bool,
    address: Option<std::net::IpAddr>,
) -> Result<(), (AppError, KeyOutcome)> {
    if policy.allowed_ips.is_some() {
        let address = address.ok_or_else(|| {
            (
                AppError::internal("the client address is missing"),
                KeyOutcome::ForbiddenAddress,
            )
        })?;
        if !policy.allows_address(address) {
            return Err((
                reject(
                    "key used from an address it is not allowed from",
                    AppError::forbidden(FORBIDDEN_ADDRESS).with_reason(reason::FORBIDDEN_ADDRESS),
                ),
                KeyOutcome::ForbiddenAddress,
            ));
        }
    }
    // A flow-bound key is confined by the principal extractors, with its
    // own answer, as before scopes existed.
    match required_scope(req) {
        Some(scope) if !flow_bound && !policy.scopes.contains(scope) => {
            Err((scope.missing(), KeyOutcome::MissingScope))
        }
        _ => Ok(()),
    }
}

/// The gateway's per-flow routes: a run, Langflow's advanced run, webhook
/// and file upload all act on a flow as its run does.
const FLOW_ROUTES: [&str; 4] = [
    "/api/v1/run/",
    "/api/v1/process/",
    "/api/v1/webhook/",
    "/api/v1/files/upload/",
];

/// The scope a route needs from a key: `run` for flow runs, `read` for
/// other safe methods, `write` for everything else under `/api/`. The
/// `admin` scope is checked where superuser rights are
/// (`Principal::require_superuser`). `/api/v1/auth/check` only describes
/// the key itself and needs none.
fn required_scope(req: &HttpRequest) -> Option<Scope> {
    let path = req.path();
    if !path.starts_with("/api/") || path.trim_end_matches('/') == "/api/v1/auth/check" {
        None
    } else if FLOW_ROUTES.iter().any(|prefix| path.starts_with(prefix)) {
        Some(Scope::Run)
    } else if req.method().is_safe() {
        Some(Scope::Read)
    } else {
        Some(Scope::Write)
    }
}

/// Paths a page may POST to without a CSRF token: signing in replaces the
/// session, signing out only ends it. Both refuse cross-site browser
/// requests themselves instead (`users::signin`), since before sign-in
/// there is no session to derive a token from.
const CSRF_EXEMPT: [&str; 2] = ["/api/v1/login", "/api/v1/logout"];

/// A state-changing request made by a browser and authenticated by the
/// session cookie must carry the session's CSRF token in `X-CSRF-Token`.
/// Safe methods, keys and bearer tokens need none: a browser never adds
/// those to a cross-site request by itself. Requests without `Origin` or
/// `Sec-Fetch-Site` do not come from a browser page (every browser sends
/// one of them on a cross-site POST), so scripts keeping a cookie jar, as
/// Langflow's clients do, work unchanged. Flow runs need none either: a
/// session grants nothing there beyond what anyone may run.
fn csrf_satisfied(req: &HttpRequest, principal: &Principal) -> bool {
    let Credential::Session {
        csrf_token,
        via_cookie: true,
        ..
    } = &principal.credential
    else {
        return true;
    };
    let from_browser =
        req.headers().contains_key(header::ORIGIN) || req.headers().contains_key("sec-fetch-site");
    let path = req.path();
    if req.method().is_safe()
        || !from_browser
        || CSRF_EXEMPT.contains(&path)
        || path.starts_with("/api/v1/run/")
        || path.starts_with("/api/v1/process/")
    {
        return true;
    }
    let mut sent = req.headers().get_all(CSRF_HEADER);
    match (sent.next(), sent.next()) {
        (Some(value), None) => sessions::csrf_matches(value.as_bytes(), csrf_token),
        _ => false,
    }
}

/// Which kind of credential failed.
enum Failure {
    Key(AppError),
    Session(AppError),
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    crate::routing::record_api("get", "/auth/check");
    cfg.route("/auth/check", web::get().to(check));
    // Before the key domain's `/api_key/{id}`, which would take the path.
    crate::routing::record_api("post", "/api_key/revoke-leaked");
    cfg.route("/api_key/revoke-leaked", web::post().to(revoke_leaked));
}

pub const TOO_MANY_REPORTS: &str = "Too many leaked-key reports from this address; retry later";

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LeakedKeys {
    keys: Vec<String>,
}

/// `POST /api/v1/api_key/revoke-leaked`: anyone who finds a key in public
/// (a person, a secret scanner) kills it, with no credentials. The answer
/// is 202 whatever the keys were, so it is no oracle for which exist. It
/// lives here, above the key domain, because each report counts against
/// the address's failed-key budget ([`KeyFailures`]): a flood of reports
/// is throttled like a flood of invalid keys.
#[utoipa::path(post, path = "/api/v1/api_key/revoke-leaked", tag = "api keys",
    request_body(content = LeakedKeys, description = "Read as JSON whatever the content type"),
    responses((status = 202, description = "The same answer whatever the keys were", body = crate::error::ErrorBody)))]
async fn revoke_leaked(
    req: HttpRequest,
    origin: crate::audit::Origin,
    state: web::Data<AppState>,
    failures: web::Data<KeyFailures>,
    crate::validate::LenientJson(report): crate::validate::LenientJson<LeakedKeys>,
) -> Result<actix_web::HttpResponse, AppError> {
    let client = failures.client(&req);
    if let Some(retry_after) = failures.throttled(client) {
        return Err(
            AppError::new(StatusCode::TOO_MANY_REQUESTS, TOO_MANY_REPORTS)
                .retry_after(retry_after)
                .with_reason(reason::INVALID_KEYS_THROTTLED),
        );
    }
    if report.keys.len() > keys::MAX_LEAKED_KEYS {
        return Err(AppError::unprocessable(format!(
            "keys may list at most {} keys per report",
            keys::MAX_LEAKED_KEYS
        )));
    }
    failures.record_failure(client);
    keys::revoke_leaked(&state, &origin, &report.keys).await?;
    Ok(actix_web::HttpResponse::Accepted().json(serde_json::json!({
        "detail": "Reported; every stored key among these is revoked"
    })))
}

/// `GET /api/v1/auth/check`: who the credentials belong to, answered from
/// the verification path alone (no further database work). Lets a script
/// test its key cheaply; the benchmark measures key verification with it.
/// Whom the credentials of `GET /api/v1/auth/check` belong to.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Check<'a> {
    authenticated: bool,
    /// `api_key` or `session`.
    method: &'static str,
    /// `null` for a session.
    key_id: Option<&'a str>,
    user_id: &'a str,
    username: &'a str,
    is_superuser: bool,
}

#[utoipa::path(get, path = "/api/v1/auth/check", tag = "authentication",
    responses((status = 200, description = "Whom the credentials belong to", body = Check)), security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = [])))]
async fn check(principal: Principal) -> actix_web::HttpResponse {
    let (method, key_id) = match &principal.credential {
        Credential::ApiKey { key_id, .. } => ("api_key", Some(key_id.as_str())),
        Credential::Session { .. } => ("session", None),
    };
    actix_web::HttpResponse::Ok().json(Check {
        authenticated: true,
        method,
        key_id,
        user_id: &principal.user.id,
        username: &principal.user.username,
        is_superuser: principal.user.is_superuser,
    })
}

/// What the request presented, before any lookup. A key is borrowed from
/// the header it came in (copied only when the query had to decode it).
#[derive(Debug)]
enum Presented<'a> {
    ApiKey(Cow<'a, str>),
    Session {
        token: String,
        via_cookie: bool,
    },
    /// An unusable `Authorization` value: refused only by routes that
    /// need credentials.
    BadSession(AppError),
    Nothing,
}

/// Who the request comes from, and for a key its use.
type Caller = (Principal, Option<KeyUse>);

/// A usable key's use: the cached key itself (its limit and counters),
/// when it was judged usable, and the client's address (after the
/// trusted proxies), each found once per request.
struct KeyUse {
    key: Arc<VerifiedKey>,
    at: chrono::NaiveDateTime,
    address: std::net::IpAddr,
}

async fn authenticate(req: &HttpRequest) -> Result<Option<Caller>, Failure> {
    let presented =
        presented_credentials(req.headers(), req.query_string()).map_err(Failure::Key)?;
    match presented {
        Presented::Nothing => Ok(None),
        Presented::ApiKey(key) => authenticate_key(req, &key)
            .await
            .map(|(KeyCaller { principal, key, at }, address)| {
                Some((principal, Some(KeyUse { key, at, address })))
            })
            .map_err(Failure::Key),
        Presented::Session { token, via_cookie } => {
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(|| Failure::Session(AppError::internal("application state missing")))?;
            sessions::authenticate(&state.pool, &token, via_cookie)
                .await
                .map(|principal| Some((principal, None)))
                .map_err(Failure::Session)
        }
        Presented::BadSession(error) => Err(Failure::Session(error)),
    }
}

/// A key, with failed-key throttling (see [`throttle`]): every 401 counts
/// against the client's address; once it is throttled, an invalid key is
/// answered 429 from the caches (or after one of its few lookups), and a
/// valid key is served as always. A usable key comes with the client's
/// address. A key the caches answer for as usable is served without
/// looking at the throttle at all: most requests cost no lookup of their
/// address.
async fn authenticate_key(
    req: &HttpRequest,
    key: &str,
) -> Result<(KeyCaller, std::net::IpAddr), AppError> {
    let (Some(verifier), Some(failures)) = (
        req.app_data::<web::Data<KeyVerifier>>(),
        req.app_data::<web::Data<KeyFailures>>(),
    ) else {
        return Err(AppError::internal("key verification services missing"));
    };
    let address = failures.address(req);
    let cached = match keys::authenticate_cached(verifier, key) {
        CacheAnswer::Answered(Ok(caller)) => return Ok((caller, address)),
        cached => cached,
    };
    let client = KeyFailures::client_of(address);
    let throttled = failures.throttled(client);
    let outcome = match (cached, throttled) {
        (CacheAnswer::Answered(outcome), _) => outcome,
        (CacheAnswer::Ask(digest), None) => keys::authenticate_stored(verifier, digest).await,
        (CacheAnswer::Ask(digest), Some(_)) if failures.take_lookup(client) => {
            keys::authenticate_stored(verifier, digest).await
        }
        (CacheAnswer::Ask(_), Some(_)) => Err(AppError::unauthorized(INVALID_KEY)),
    };
    match outcome {
        Err(error) if is_invalid_key(&error) => {
            failures.record_failure(client);
            match throttled {
                None => Err(error),
                Some(retry_after) => Err(reject(
                    "invalid key from a throttled address",
                    AppError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        throttle::TOO_MANY_INVALID_KEYS,
                    )
                    .retry_after(retry_after)
                    .with_reason(reason::INVALID_KEYS_THROTTLED),
                )),
            }
        }
        other => other.map(|caller| (caller, address)),
    }
}

fn is_invalid_key(error: &AppError) -> bool {
    error.status() == StatusCode::UNAUTHORIZED
}

/// Reads the credentials a request carries without touching the database.
/// Several keys, or a header and a query parameter that disagree, are
/// refused (Langflow silently prefers the query; an ambiguous request is
/// more likely a mistake or an attack than an intent).
fn presented_credentials<'a>(
    headers: &'a HeaderMap,
    query: &'a str,
) -> Result<Presented<'a>, AppError> {
    let mut header_values = headers.get_all(API_KEY_HEADER);
    let header_key = header_values.next();
    if header_values.next().is_some() {
        return Err(reject(
            "several key headers",
            AppError::bad_request("Send exactly one x-api-key header"),
        ));
    }
    // Not `HeaderValue::to_str`, which checks each byte for visible
    // ASCII: a key is checked byte by byte anyway (`is_well_formed`), so
    // anything else in it is refused there, with the same 401.
    let header_key = match header_key {
        Some(value) => Some(Cow::Borrowed(
            std::str::from_utf8(value.as_bytes())
                .map_err(|_| reject("non-ASCII key header", AppError::unauthorized(INVALID_KEY)))?
                .trim(),
        )),
        None => None,
    };

    let mut query_keys = form_urlencoded::parse(query.as_bytes())
        .filter(|(name, _)| name.eq_ignore_ascii_case(API_KEY_QUERY))
        .map(|(_, value)| value);
    let query_key = query_keys.next();
    if query_keys.next().is_some() {
        return Err(reject(
            "several key parameters",
            AppError::bad_request("Send exactly one x-api-key query parameter"),
        ));
    }

    match (header_key, query_key) {
        (Some(header), Some(query)) if header != query => Err(reject(
            "header and query keys differ",
            AppError::bad_request(
                "The x-api-key header and the x-api-key query parameter carry different keys; send one",
            ),
        )),
        (Some(key), _) | (None, Some(key)) => Ok(Presented::ApiKey(key)),
        (None, None) => Ok(match session_token(headers) {
            Ok(Some((token, via_cookie))) => Presented::Session { token, via_cookie },
            Ok(None) => Presented::Nothing,
            Err(error) => Presented::BadSession(error),
        }),
    }
}

/// The session token from the `Authorization: Bearer` header or the cookie,
/// and whether it came from the cookie. Other `Authorization` schemes (a
/// proxy's Basic auth, say) are not ours and are ignored; an API key sent
/// as a bearer token is an error, reported only where credentials matter.
fn session_token(headers: &HeaderMap) -> Result<Option<(String, bool)>, AppError> {
    if let Some(token) = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(strip_bearer)
    {
        let token = token.trim();
        if token.starts_with(ApiKeyKind::PREFIX) {
            return Err(reject(
                "api key in authorization header",
                AppError::unauthorized(
                    "API keys go in the x-api-key header or the x-api-key query parameter, not Authorization",
                ),
            ));
        }
        return Ok(Some((token.to_string(), false)));
    }
    Ok(sessions::cookie_value(headers).map(|token| (token, true)))
}

/// The token of an `Authorization: Bearer …` value (scheme name in any case).
fn strip_bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};
    use actix_web::http::Method;
    use actix_web::test::TestRequest;

    fn scope(method: Method, uri: &str) -> Option<Scope> {
        required_scope(
            &TestRequest::default()
                .method(method)
                .uri(uri)
                .to_http_request(),
        )
    }

    #[test]
    fn every_per_flow_route_needs_the_run_scope() {
        for uri in [
            "/api/v1/run/flow",
            "/api/v1/run/advanced/flow",
            "/api/v1/process/flow",
            "/api/v1/webhook/flow",
            "/api/v1/files/upload/flow",
        ] {
            assert_eq!(scope(Method::POST, uri), Some(Scope::Run), "{uri}");
        }
        assert_eq!(scope(Method::POST, "/api/v1/flows/"), Some(Scope::Write));
        assert_eq!(scope(Method::GET, "/api/v1/flows/"), Some(Scope::Read));
        assert_eq!(scope(Method::GET, "/api/v1/audit"), Some(Scope::Read));
        assert_eq!(scope(Method::GET, "/api/v1/auth/check"), None);
        assert_eq!(scope(Method::GET, "/health"), None);
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn key(presented: Result<Presented, AppError>) -> String {
        match presented {
            Ok(Presented::ApiKey(key)) => key.into_owned(),
            other => panic!("expected a key, got {other:?}"),
        }
    }

    #[test]
    fn reads_header_or_query() {
        assert_eq!(
            key(presented_credentials(
                &headers(&[("X-API-KEY", "sk-a")]),
                ""
            )),
            "sk-a"
        );
        assert_eq!(
            key(presented_credentials(
                &headers(&[]),
                "x-api-key=sk-b&stream=true"
            )),
            "sk-b"
        );
        assert_eq!(
            key(presented_credentials(
                &headers(&[("x-api-key", "sk-a")]),
                "x-api-key=sk-a"
            )),
            "sk-a"
        );
        assert!(matches!(
            presented_credentials(&headers(&[]), ""),
            Ok(Presented::Nothing)
        ));
    }

    #[test]
    fn refuses_ambiguity() {
        let one = headers(&[("x-api-key", "sk-a")]);
        let conflict = presented_credentials(&one, "x-api-key=sk-b");
        assert_eq!(conflict.unwrap_err().status().as_u16(), 400);
        let two = headers(&[("x-api-key", "sk-a"), ("x-api-key", "sk-b")]);
        let twice = presented_credentials(&two, "");
        assert_eq!(twice.unwrap_err().status().as_u16(), 400);
        let none = headers(&[]);
        let twice_query = presented_credentials(&none, "x-api-key=a&x-api-key=b");
        assert_eq!(twice_query.unwrap_err().status().as_u16(), 400);
    }

    #[test]
    fn bearer_is_for_sessions_only() {
        match presented_credentials(&headers(&[("authorization", "Bearer sk-abc")]), "") {
            Ok(Presented::BadSession(error)) => assert_eq!(error.status().as_u16(), 401),
            other => panic!("expected a deferred refusal, got {other:?}"),
        }
        match presented_credentials(&headers(&[("authorization", "Bearer tok")]), "") {
            Ok(Presented::Session { token, via_cookie }) => {
                assert_eq!(token, "tok");
                assert!(!via_cookie);
            }
            other => panic!("expected a session, got {other:?}"),
        }
        // Another scheme (a proxy's Basic auth) is not ours: ignored.
        assert!(matches!(
            presented_credentials(&headers(&[("authorization", "Basic dTpw")]), ""),
            Ok(Presented::Nothing)
        ));
    }
}
