//! The one place a request becomes "who is this".
//!
//! [`resolve`] is a middleware on the whole app: it reads an `sk-` key from
//! the `x-api-key` header or the `x-api-key` query parameter, or else a
//! session (cookie or `Authorization: Bearer`), before any handler runs or
//! any body is read. A bad key is answered at once (400/401); the outcome
//! is left in the request for the [`Principal`] / [`MaybePrincipal`]
//! extractors that every protected handler takes. Malformed input is refused
//! before any database work; unknown, revoked, expired, inactive keys and
//! keys of inactive owners all get the same 401 body.
//!
//! Flow-bound keys are confined here, once: [`Principal`] and
//! [`MaybePrincipal`] refuse them (403), so no handler written with them can
//! be reached by such a key; only the gateway takes [`FlowCaller`], which
//! accepts them and leaves it to check that the flow run is the bound one.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, AUTHORIZATION};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};

use crate::error::AppError;
use crate::keys::token::{self, KeyDigest};
use crate::sessions;
use crate::state::AppState;

pub const API_KEY_HEADER: &str = "x-api-key";
pub const API_KEY_QUERY: &str = "x-api-key";

pub const MISSING_CREDENTIALS: &str = "An API key must be passed as the x-api-key header \
    or the x-api-key query parameter (or sign in for a session)";
pub const INVALID_KEY: &str = "Invalid API key";
pub const INVALID_SESSION: &str = "Invalid or expired session; sign in again";
pub const NOT_ENOUGH_PRIVILEGES: &str = "The user doesn't have enough privileges";
pub const CSRF_REFUSED: &str = "Missing or invalid CSRF token";
/// The header a page sends its session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
pub const FLOW_BOUND_KEY: &str = "This API key is bound to one flow and can only run it";

/// The authenticated user, as every handler sees it.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: String,
    pub username: String,
    pub is_superuser: bool,
}

/// How the request proved who it is.
#[derive(Debug, Clone)]
pub enum Credential {
    /// `flow_id`: the one flow a flow-bound key may run.
    ApiKey {
        key_id: String,
        flow_id: Option<String>,
    },
    Session {
        session_id: String,
        /// The token a page must echo in `X-CSRF-Token` (see
        /// [`sessions::csrf_token`]).
        csrf_token: String,
        /// True when the session came from the cookie, not `Authorization`.
        via_cookie: bool,
    },
}

#[derive(Debug, Clone)]
pub struct Principal {
    pub user: AuthUser,
    pub credential: Credential,
}

impl Principal {
    pub fn require_superuser(&self) -> Result<(), AppError> {
        if self.user.is_superuser {
            Ok(())
        } else {
            Err(AppError::forbidden(NOT_ENOUGH_PRIVILEGES))
        }
    }

    pub fn session_id(&self) -> Option<&str> {
        match &self.credential {
            Credential::Session { session_id, .. } => Some(session_id),
            Credential::ApiKey { .. } => None,
        }
    }

    /// The flow a flow-bound key is confined to.
    pub fn bound_flow(&self) -> Option<&str> {
        match &self.credential {
            Credential::ApiKey { flow_id, .. } => flow_id.as_deref(),
            Credential::Session { .. } => None,
        }
    }

    /// The CSRF token of the session the request came with, if any.
    pub fn csrf_token(&self) -> Option<&str> {
        match &self.credential {
            Credential::Session { csrf_token, .. } => Some(csrf_token),
            Credential::ApiKey { .. } => None,
        }
    }

    /// True when the request authenticated with an `sk-` key.
    pub fn is_api_key(&self) -> bool {
        matches!(self.credential, Credential::ApiKey { .. })
    }
}

/// A principal when the request carries credentials, `None` when it
/// carries none at all. Bad credentials are still refused.
pub struct MaybePrincipal(pub Option<Principal>);

/// Who calls a flow run: like [`MaybePrincipal`], but flow-bound keys are
/// let through. Only the gateway may take it, and it must then refuse a
/// flow-bound key for any flow but its own.
pub struct FlowCaller(pub Option<Principal>);

/// What [`resolve`] found, kept in the request's extensions until the
/// handler's one principal extractor takes it.
struct Resolved(Result<Option<Principal>, AppError>);

/// Moved out rather than copied: each handler takes exactly one of
/// `Principal`, `MaybePrincipal` or `FlowCaller`.
fn resolved(req: &HttpRequest) -> Result<Option<Principal>, AppError> {
    match req.extensions_mut().remove::<Resolved>() {
        Some(Resolved(outcome)) => outcome,
        None => Err(AppError::internal(
            "authentication middleware is not installed",
        )),
    }
}

/// The outcome for every extractor but [`FlowCaller`]: flow-bound keys are
/// refused.
fn resolved_unbound(req: &HttpRequest) -> Result<Option<Principal>, AppError> {
    let principal = resolved(req)?;
    if principal.as_ref().is_some_and(|p| p.bound_flow().is_some()) {
        return Err(reject(
            "flow-bound key outside its flow",
            AppError::forbidden(FLOW_BOUND_KEY),
        ));
    }
    Ok(principal)
}

impl FromRequest for Principal {
    type Error = AppError;
    type Future = std::future::Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(resolved_unbound(req).and_then(|principal| {
            principal.ok_or_else(|| {
                reject(
                    "missing credentials",
                    AppError::unauthorized(MISSING_CREDENTIALS),
                )
            })
        }))
    }
}

impl FromRequest for MaybePrincipal {
    type Error = AppError;
    type Future = std::future::Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(resolved_unbound(req).map(MaybePrincipal))
    }
}

impl FromRequest for FlowCaller {
    type Error = AppError;
    type Future = std::future::Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(resolved(req).map(FlowCaller))
    }
}

/// The authentication middleware (see the module doc). Key failures end
/// the request here; a stale session is only recorded, so sign-in and
/// sign-out still work with an old cookie.
pub async fn resolve<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let outcome = match authenticate(req.request()).await {
        Err(Failure::Key(error)) => {
            return Ok(req.error_response(error).map_into_right_body());
        }
        Err(Failure::Session(error)) => Err(error),
        Ok(principal) => Ok(principal),
    };
    if let Ok(Some(principal)) = &outcome {
        if !csrf_satisfied(req.request(), principal) {
            let error = reject(
                "missing or invalid CSRF token",
                AppError::forbidden(CSRF_REFUSED),
            );
            return Ok(req.error_response(error).map_into_right_body());
        }
    }
    req.extensions_mut().insert(Resolved(outcome));
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// Paths a page may POST to without a CSRF token: signing in replaces the
/// session, signing out only ends it.
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
    cfg.route("/auth/check", web::get().to(check));
}

/// `GET /api/v1/auth/check`: who the credentials belong to, answered from
/// the verification path alone (no further database work). Lets a script
/// test its key cheaply; the benchmark measures key verification with it.
async fn check(principal: Principal) -> actix_web::HttpResponse {
    #[derive(serde::Serialize)]
    struct Check<'a> {
        authenticated: bool,
        method: &'static str,
        key_id: Option<&'a str>,
        user_id: &'a str,
        username: &'a str,
        is_superuser: bool,
    }
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

/// What the request presented, before any lookup.
#[derive(Debug)]
enum Presented {
    ApiKey(String),
    Session {
        token: String,
        via_cookie: bool,
    },
    /// An unusable `Authorization` value: refused only by routes that
    /// need credentials.
    BadSession(AppError),
    Nothing,
}

fn reject(reason: &'static str, error: AppError) -> AppError {
    tracing::debug!(
        reason,
        status = error.status().as_u16(),
        "authentication rejected"
    );
    error
}

async fn authenticate(req: &HttpRequest) -> Result<Option<Principal>, Failure> {
    let presented =
        presented_credentials(req.headers(), req.query_string()).map_err(Failure::Key)?;
    if matches!(presented, Presented::Nothing) {
        return Ok(None);
    }
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| Failure::Key(AppError::internal("application state missing")))?;
    match presented {
        Presented::ApiKey(key) => authenticate_key(state, &key)
            .await
            .map(Some)
            .map_err(Failure::Key),
        Presented::Session { token, via_cookie } => authenticate_session(state, &token, via_cookie)
            .await
            .map(Some)
            .map_err(Failure::Session),
        Presented::BadSession(error) => Err(Failure::Session(error)),
        Presented::Nothing => Ok(None),
    }
}

async fn authenticate_key(state: &AppState, key: &str) -> Result<Principal, AppError> {
    if !token::is_well_formed(key) {
        return Err(reject("malformed key", AppError::unauthorized(INVALID_KEY)));
    }
    let now = crate::db::now();
    let verified = state.keys.verify(KeyDigest::of(key)).await?;
    match verified {
        Some(key) if key.is_usable_at(now) => {
            key.usage.record(now);
            Ok(Principal {
                user: key.owner.clone(),
                credential: Credential::ApiKey {
                    key_id: key.key_id.clone(),
                    flow_id: key.flow_id.clone(),
                },
            })
        }
        Some(_) => Err(reject("unusable key", AppError::unauthorized(INVALID_KEY))),
        None => Err(reject("unknown key", AppError::unauthorized(INVALID_KEY))),
    }
}

async fn authenticate_session(
    state: &AppState,
    token: &str,
    via_cookie: bool,
) -> Result<Principal, AppError> {
    if !sessions::token::is_well_formed(token) {
        return Err(reject(
            "malformed session token",
            AppError::unauthorized(INVALID_SESSION),
        ));
    }
    let hash = sessions::token::hash(token);
    let found = crate::db::run(&state.pool, move |conn| {
        sessions::store::find_active(conn, &hash, crate::db::now()).map_err(AppError::from)
    })
    .await?;
    match found {
        Some((session_id, user)) => Ok(Principal {
            user,
            credential: Credential::Session {
                session_id,
                csrf_token: sessions::csrf_token(token),
                via_cookie,
            },
        }),
        None => Err(reject(
            "unknown or expired session",
            AppError::unauthorized(INVALID_SESSION),
        )),
    }
}

/// Reads the credentials a request carries without touching the database.
/// Several keys, or a header and a query parameter that disagree, are
/// refused (Langflow silently prefers the query; an ambiguous request is
/// more likely a mistake or an attack than an intent).
fn presented_credentials(headers: &HeaderMap, query: &str) -> Result<Presented, AppError> {
    let mut header_values = headers.get_all(API_KEY_HEADER);
    let header_key = header_values.next();
    if header_values.next().is_some() {
        return Err(reject(
            "several key headers",
            AppError::bad_request("Send exactly one x-api-key header"),
        ));
    }
    let header_key = match header_key {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| reject("non-ASCII key header", AppError::unauthorized(INVALID_KEY)))?
                .trim()
                .to_string(),
        ),
        None => None,
    };

    let mut query_keys = form_urlencoded::parse(query.as_bytes())
        .filter(|(name, _)| name.eq_ignore_ascii_case(API_KEY_QUERY))
        .map(|(_, value)| value.into_owned());
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
        if token.starts_with(token::KEY_PREFIX) {
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
pub fn strip_bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

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
            Ok(Presented::ApiKey(key)) => key,
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
        let conflict = presented_credentials(&headers(&[("x-api-key", "sk-a")]), "x-api-key=sk-b");
        assert_eq!(conflict.unwrap_err().status().as_u16(), 400);
        let twice = presented_credentials(
            &headers(&[("x-api-key", "sk-a"), ("x-api-key", "sk-b")]),
            "",
        );
        assert_eq!(twice.unwrap_err().status().as_u16(), 400);
        let twice_query = presented_credentials(&headers(&[]), "x-api-key=a&x-api-key=b");
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
