//! Sign-in and sign-out on Langflow's routes: `POST /api/v1/login` (form
//! or JSON), `POST /api/v1/logout`, the session's CSRF token for pages
//! (`GET /api/v1/session`) and `GET /api/v1/auto_login` when
//! `KEYGATE_AUTO_LOGIN` is on. Sessions themselves belong to `sessions`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::check::PasswordCheck;
use super::password::HashQueue;
use super::throttle::SigninThrottle;
use super::{store, UserView};
use crate::audit::{self, Action, Entry, Origin};
use crate::bus::Event;
use crate::db;
use crate::error::AppError;
use crate::identity::{MaybePrincipal, Resolved, MISSING_CREDENTIALS};
use crate::metrics::SigninOutcome;
use crate::routing;
use crate::sessions;
use crate::state::AppState;
use crate::token::SessionToken;

const WRONG_CREDENTIALS: &str = "Incorrect username or password";
pub const AUTO_LOGIN_DISABLED: &str =
    "Auto login is disabled; sign in with a username and password";

pub fn routes(cfg: &mut web::ServiceConfig) {
    for (method, path) in [
        ("post", "/login"),
        ("post", "/logout"),
        ("get", "/session"),
        ("get", "/auto_login"),
    ] {
        routing::record_api(method, path);
    }
    cfg.route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout))
        .route("/session", web::get().to(current_session))
        .route("/auto_login", web::get().to(auto_login));
}

#[derive(Deserialize, utoipa::ToSchema)]
struct LoginRequest {
    username: Option<String>,
    password: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct LoginResponse {
    access_token: String,
    token_type: &'static str,
    /// For pages: the value of `X-CSRF-Token` on state-changing requests.
    csrf_token: String,
}

/// Accepts `application/x-www-form-urlencoded` (as Langflow) or JSON.
fn parse_login(req: &HttpRequest, body: &[u8]) -> Result<LoginRequest, AppError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
        || body.trim_ascii_start().starts_with(b"{");
    if is_json {
        serde_json::from_slice(body).map_err(AppError::invalid_json)
    } else {
        let mut request = LoginRequest {
            username: None,
            password: None,
        };
        for (name, value) in form_urlencoded::parse(body) {
            match name.as_ref() {
                "username" => request.username = Some(value.into_owned()),
                "password" => request.password = Some(value.into_owned()),
                _ => {}
            }
        }
        Ok(request)
    }
}

pub const CROSS_SITE_REFUSED: &str =
    "Signing in or out from another site is not allowed; use keygate's own page";

/// Refuses a sign-in or sign-out a browser sends on another site's behalf:
/// one it marks `Sec-Fetch-Site: cross-site`, or whose `Origin` is not the
/// host the request was sent to (an opaque `null` origin included).
/// Otherwise a page elsewhere could sign a visitor into the attacker's
/// account (login CSRF) or out of their own. Scripts send neither header
/// and are unaffected. The CSRF token cannot guard these two routes: before
/// sign-in there is no session to derive it from.
fn refuse_cross_site(req: &HttpRequest) -> Result<(), AppError> {
    let headers = req.headers();
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    let foreign_origin = headers
        .get(header::ORIGIN)
        .is_some_and(|origin| !same_host(origin.to_str().unwrap_or(""), req));
    if cross_site || foreign_origin {
        tracing::info!(path = req.path(), "cross-site sign-in or sign-out refused");
        return Err(AppError::forbidden(CROSS_SITE_REFUSED));
    }
    Ok(())
}

/// True when `origin` (`scheme://host[:port]`) names the host the request
/// was addressed to (`Host`, or the forwarded host a proxy passes on, which
/// a browser page cannot set). Default ports count as given.
fn same_host(origin: &str, req: &HttpRequest) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    let normalise = |authority: &str| {
        let authority = authority.to_ascii_lowercase();
        match authority.strip_suffix(default_port) {
            Some(bare) => bare.to_string(),
            None => authority,
        }
    };
    normalise(authority) == normalise(req.connection_info().host())
}

#[utoipa::path(post, path = "/api/v1/login", tag = "sessions",
    request_body(description = "Form fields (as Langflow's clients send them) or JSON; other fields are ignored",
        content((LoginRequest = "application/x-www-form-urlencoded"), (LoginRequest = "application/json"))),
    responses((status = 200, description = "A new session, also set as the `keygate_session` cookie", body = LoginResponse)))]
async fn login(
    state: web::Data<AppState>,
    throttle: web::Data<SigninThrottle>,
    hashing: web::Data<HashQueue>,
    req: HttpRequest,
    origin: Origin,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    refuse_cross_site(&req)?;
    let request = parse_login(&req, &body)?;
    let username = request
        .username
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| AppError::unprocessable("username is required"))?;
    let password_text = request
        .password
        .filter(|p| !p.is_empty())
        .ok_or_else(|| AppError::unprocessable("password is required"))?;
    let check = PasswordCheck {
        state: &state,
        throttle: &throttle,
        hashing: &hashing,
    };
    let signins = state.metrics.signins();
    // Unknown user or wrong password: one answer, one counted failure.
    let failure = Entry::new(Action::LoginFailure, &origin).with("method", "password");
    let user = match check
        .user(&req, username.trim().to_string(), password_text, failure)
        .await
    {
        Ok(Some(user)) => user,
        Ok(None) => {
            signins.record(SigninOutcome::Failure);
            return Err(AppError::unauthorized(WRONG_CREDENTIALS));
        }
        Err(error) => {
            if error.status() == actix_web::http::StatusCode::TOO_MANY_REQUESTS {
                signins.record(SigninOutcome::Throttled);
            }
            return Err(error);
        }
    };
    if !user.is_active {
        signins.record(SigninOutcome::Failure);
        let refused = Entry::new(Action::LoginFailure, &origin)
            .owner(user.id)
            .with("method", "password")
            .with("reason", "inactive_user");
        db::run(&state.pool, move |conn| audit::record(conn, &[refused])).await?;
        return Err(AppError::unauthorized("Inactive user"));
    }
    let ttl = state.config.session_ttl;
    let user_id = user.id;
    let (user_id, token) = db::run(&state.pool, move |conn| {
        audit::within(conn, |conn| {
            store::record_login(conn, &user_id)?;
            let token = sessions::start(conn, &user_id, ttl)?;
            let success = Entry::new(Action::LoginSuccess, &origin)
                .owner(&*user_id)
                .actor(&*user_id)
                .with("method", "password");
            Ok(((user_id, token), vec![success]))
        })
    })
    .await?;
    state.bus.publish(Event::UserChanged(user_id));
    signins.record(SigninOutcome::Success);
    Ok(session_response(&state, token))
}

/// The answer that hands a new session to the client: the cookie, and the
/// token and its CSRF token in the body.
fn session_response(state: &AppState, token: SessionToken) -> HttpResponse {
    HttpResponse::Ok()
        .cookie(sessions::cookie(&state.config, &token))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(LoginResponse {
            csrf_token: sessions::csrf_token(token.expose()),
            access_token: token.into_string(),
            token_type: "bearer",
        })
}

#[derive(Serialize, utoipa::ToSchema)]
struct SessionView {
    /// `null` when signed out (only with `?optional=true`).
    csrf_token: Option<String>,
    user: Option<UserView>,
    /// When the session ends (it is not extended by use).
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Whether `GET /api/v1/auto_login` hands out sessions, so a page asks
    /// it only when it is on.
    auto_login: bool,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct SessionQuery {
    /// `true`: no credentials at all is a 200 with `user: null`, not a 401,
    /// so a signed-out page load logs no error.
    #[serde(default)]
    optional: bool,
}

/// The signed-in user, the session's CSRF token and end, and whether
/// auto-login is on. Only for sessions: a request with an API key has no
/// session to describe. Answered from the principal, no database read.
#[utoipa::path(get, path = "/api/v1/session", tag = "sessions", params(SessionQuery),
    responses((status = 200, description = "The session; all `null` with `?optional=true` and no credentials", body = SessionView)),
    security((), ("session_bearer" = []), ("session_cookie" = [])))]
async fn current_session(
    state: web::Data<AppState>,
    MaybePrincipal(principal): MaybePrincipal,
    query: web::Query<SessionQuery>,
) -> Result<HttpResponse, AppError> {
    let auto_login = state.config.auto_login;
    let view = match principal {
        None if query.optional => SessionView {
            csrf_token: None,
            user: None,
            expires_at: None,
            auto_login,
        },
        None => {
            return Err(crate::identity::reject(
                "missing credentials",
                AppError::unauthorized(MISSING_CREDENTIALS),
            ))
        }
        Some(principal) => {
            let (Some(csrf_token), Some(expires_at)) =
                (principal.csrf_token(), principal.session_expires_at())
            else {
                return Err(AppError::bad_request(
                    "This route describes a sign-in session; an API key has none",
                ));
            };
            SessionView {
                csrf_token: Some(csrf_token.to_string()),
                user: Some(UserView::from(&*principal.user)),
                expires_at: Some(expires_at.and_utc()),
                auto_login,
            }
        }
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(view))
}

/// Langflow's auto-login: with `KEYGATE_AUTO_LOGIN=true`, anyone who can
/// reach keygate gets a session as the superuser named by
/// `KEYGATE_SUPERUSER`, without a password. Refused (400) otherwise, and
/// (403) for a host that is not named or a cross-site request (see
/// `hosts::auto_login_refusal`).
#[utoipa::path(get, path = "/api/v1/auto_login", tag = "sessions",
    responses((status = 200, description = "A superuser session, as from login (only with `KEYGATE_AUTO_LOGIN=true`)", body = LoginResponse)))]
async fn auto_login(
    state: web::Data<AppState>,
    req: HttpRequest,
    origin: Origin,
) -> Result<HttpResponse, AppError> {
    if !state.config.auto_login {
        return Err(AppError::bad_request(AUTO_LOGIN_DISABLED));
    }
    if let Some(detail) = crate::hosts::auto_login_refusal(&state.config.allowed_hosts(), &req) {
        return Err(AppError::forbidden(detail));
    }
    let username = state.config.superuser.clone();
    let ttl = state.config.session_ttl;
    let (user_id, token) = db::run(&state.pool, move |conn| {
        let user = store::find_by_username(conn, username.trim())?
            .filter(|u| u.is_active && u.is_superuser)
            .ok_or_else(|| {
                AppError::forbidden(format!(
                    "Auto login needs an active superuser named {username:?} (KEYGATE_SUPERUSER)"
                ))
            })?;
        audit::within(conn, |conn| {
            store::record_login(conn, &user.id)?;
            let token = sessions::start(conn, &user.id, ttl)?;
            let success = Entry::new(Action::LoginSuccess, &origin)
                .owner(&*user.id)
                .actor(&*user.id)
                .with("method", "auto_login");
            Ok(((user.id, token), vec![success]))
        })
    })
    .await?;
    // `last_login_at` changed: cached principals of this user are stale.
    state.bus.publish(Event::UserChanged(user_id));
    state.metrics.signins().record(SigninOutcome::Success);
    Ok(session_response(&state, token))
}

/// Ends the session the request came with (cookie or bearer, as resolved
/// by the middleware) and clears the cookie. Always succeeds, so a stale
/// cookie can still sign out.
#[utoipa::path(post, path = "/api/v1/logout", tag = "sessions",
    responses((status = 200, description = "`{\"message\": \"Logout successful\"}`, whatever session was presented", body = routing::Message)),
    security((), ("session_bearer" = []), ("session_cookie" = [])))]
async fn logout(
    state: web::Data<AppState>,
    req: HttpRequest,
    origin: Origin,
) -> Result<HttpResponse, AppError> {
    refuse_cross_site(&req)?;
    let session = Resolved::take(&req).ok().flatten().and_then(|principal| {
        let session_id = principal.session_id()?.to_string();
        Some((principal, session_id))
    });
    if let Some((principal, session_id)) = session {
        let entry = Entry::new(Action::Logout, &origin).by(&principal);
        db::run(&state.pool, move |conn| {
            audit::within(conn, |conn| {
                sessions::end(conn, &session_id)?;
                Ok(((), vec![entry]))
            })
        })
        .await?;
    }
    Ok(HttpResponse::Ok()
        .cookie(sessions::removal_cookie(&state.config))
        .json(serde_json::json!({"message": "Logout successful"})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn refused(headers: &[(&str, &str)]) -> bool {
        let mut req = TestRequest::post()
            .uri("/api/v1/login")
            .insert_header(("host", "localhost:7860"));
        for header in headers {
            req = req.insert_header(*header);
        }
        refuse_cross_site(&req.to_http_request()).is_err()
    }

    #[test]
    fn refuses_cross_site_browsers_only() {
        // Scripts: no Origin, no Sec-Fetch-Site.
        assert!(!refused(&[]));
        assert!(!refused(&[("sec-fetch-site", "same-origin")]));
        assert!(!refused(&[("origin", "http://localhost:7860")]));
        assert!(!refused(&[("origin", "HTTP://LocalHost:7860")]));
        assert!(refused(&[("sec-fetch-site", "cross-site")]));
        assert!(refused(&[("origin", "https://attacker.example")]));
        assert!(refused(&[("origin", "http://localhost:8080")]));
        assert!(refused(&[("origin", "null")]));
        assert!(refused(&[
            ("origin", "http://localhost:7860"),
            ("sec-fetch-site", "cross-site")
        ]));
    }

    #[test]
    fn default_ports_match_a_bare_host() {
        let req = TestRequest::post()
            .insert_header(("host", "keygate.example"))
            .to_http_request();
        assert!(same_host("https://keygate.example:443", &req));
        assert!(same_host("https://keygate.example", &req));
        assert!(!same_host("https://keygate.example:8443", &req));
        assert!(!same_host("ftp://keygate.example", &req));
        let forwarded = TestRequest::post()
            .insert_header(("host", "127.0.0.1:7860"))
            .insert_header(("x-forwarded-host", "keygate.example"))
            .to_http_request();
        assert!(same_host("https://keygate.example", &forwarded));
    }
}
