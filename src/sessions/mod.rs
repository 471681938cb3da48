//! Sign-in and sign-out: server-side sessions carried by an HttpOnly,
//! SameSite=Strict cookie or returned as a bearer token; the session's
//! CSRF token for pages (`GET /api/v1/session`); Langflow's
//! `GET /api/v1/auto_login` when `KEYGATE_AUTO_LOGIN` is on.

pub mod store;
pub mod token;

use actix_web::cookie::{time, Cookie, SameSite};
use actix_web::http::header::{self, HeaderMap};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::Principal;
use crate::db;
use crate::error::AppError;
use crate::state::AppState;
use crate::users::{password, store as users_store, UserView};

pub const SESSION_COOKIE: &str = "keygate_session";
const WRONG_CREDENTIALS: &str = "Incorrect username or password";
pub const AUTO_LOGIN_DISABLED: &str =
    "Auto login is disabled; sign in with a username and password";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout))
        .route("/session", web::get().to(current_session))
        .route("/auto_login", web::get().to(auto_login));
}

/// The CSRF token of a session: hex SHA-256 of `csrf:` and the session
/// token. A page learns it from the login answer or `GET /api/v1/session`
/// and sends it back in `X-CSRF-Token`; a cross-site page can read neither.
pub fn csrf_token(session_token: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"csrf:");
    hasher.update(session_token.as_bytes());
    hex::encode(hasher.finalize())
}

/// Compares a sent CSRF token with the expected one through their hashes,
/// so the time taken says nothing about the expected value.
pub fn csrf_matches(sent: &[u8], expected: &str) -> bool {
    Sha256::digest(sent) == Sha256::digest(expected.as_bytes())
}

#[derive(Deserialize)]
struct LoginRequest {
    username: Option<String>,
    password: Option<String>,
}

#[derive(Serialize)]
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
        serde_json::from_slice(body)
            .map_err(|e| AppError::unprocessable(format!("Invalid JSON body: {e}")))
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

async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    let request = parse_login(&req, &body)?;
    let username = request
        .username
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| AppError::unprocessable("username is required"))?;
    let password_text = request
        .password
        .filter(|p| !p.is_empty())
        .ok_or_else(|| AppError::unprocessable("password is required"))?;
    let ttl = state.config.session_ttl;
    let session_token = token::generate()?;
    let token_hash = token::hash(&session_token);

    // The password is checked between two short database calls, so a flood
    // of sign-ins waits for the hashing thread without holding connections.
    let lookup = username.trim().to_string();
    let user = db::run(&state.pool, move |conn| {
        users_store::find_by_username(conn, &lookup).map_err(AppError::from)
    })
    .await?;
    let stored_hash = user.as_ref().map_or_else(
        || password::dummy_hash().to_string(),
        |u| u.password_hash.clone(),
    );
    let matches = web::block(move || password::verify(&password_text, &stored_hash))
        .await
        .map_err(|_| AppError::internal("password check was cancelled"))?;
    let user = match user {
        Some(user) if matches => user,
        _ => return Err(AppError::unauthorized(WRONG_CREDENTIALS)),
    };
    if !user.is_active {
        return Err(AppError::unauthorized("Inactive user"));
    }
    db::run(&state.pool, move |conn| {
        create_session(conn, &user.id, &token_hash, ttl)
    })
    .await?;

    Ok(session_response(&state, session_token))
}

/// The answer that hands a new session to the client: the cookie, and the
/// token and its CSRF token in the body.
fn session_response(state: &AppState, session_token: String) -> HttpResponse {
    let ttl = state.config.session_ttl;
    let cookie = Cookie::build(SESSION_COOKIE, session_token.clone())
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.config.cookie_secure)
        .path("/")
        .max_age(time::Duration::seconds(
            i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
        ))
        .finish();
    HttpResponse::Ok()
        .cookie(cookie)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(LoginResponse {
            csrf_token: csrf_token(&session_token),
            access_token: session_token,
            token_type: "bearer",
        })
}

/// Stores a new session for `user_id` and records the sign-in.
fn create_session(
    conn: &mut db::DbConnection,
    user_id: &str,
    token_hash: &str,
    ttl: std::time::Duration,
) -> Result<(), AppError> {
    let now = db::now();
    let expires_at = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(12));
    users_store::record_login(conn, user_id)?;
    store::delete_expired(conn, now)?;
    store::create(conn, user_id, token_hash, now, expires_at)?;
    Ok(())
}

#[derive(Serialize)]
struct SessionView {
    csrf_token: String,
    user: UserView,
}

/// The signed-in user and the session's CSRF token. Only for sessions: a
/// request with an API key has no session to describe.
async fn current_session(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<HttpResponse, AppError> {
    let csrf_token = principal
        .csrf_token()
        .ok_or_else(|| {
            AppError::bad_request("This route describes a sign-in session; an API key has none")
        })?
        .to_string();
    let user_id = principal.user.id;
    let user = db::run(&state.pool, move |conn| {
        users_store::find_by_id(conn, &user_id).map_err(AppError::from)
    })
    .await?
    .ok_or_else(|| AppError::unauthorized(crate::auth::INVALID_SESSION))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(SessionView {
            csrf_token,
            user: UserView::from(user),
        }))
}

/// Langflow's auto-login: with `KEYGATE_AUTO_LOGIN=true`, anyone who can
/// reach keygate gets a session as the superuser named by
/// `KEYGATE_SUPERUSER`, without a password. Refused (400) otherwise.
async fn auto_login(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    if !state.config.auto_login {
        return Err(AppError::bad_request(AUTO_LOGIN_DISABLED));
    }
    let username = state.config.superuser.clone();
    let ttl = state.config.session_ttl;
    let session_token = token::generate()?;
    let token_hash = token::hash(&session_token);
    db::run(&state.pool, move |conn| {
        let user = users_store::find_by_username(conn, username.trim())?
            .filter(|u| u.is_active && u.is_superuser)
            .ok_or_else(|| {
                AppError::forbidden(format!(
                    "Auto login needs an active superuser named {username:?} (KEYGATE_SUPERUSER)"
                ))
            })?;
        create_session(conn, &user.id, &token_hash, ttl)
    })
    .await?;
    Ok(session_response(&state, session_token))
}

/// Ends the presented session (cookie or bearer) and clears the cookie.
/// Always succeeds, so a stale cookie can still sign out.
async fn logout(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, AppError> {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::strip_bearer)
        .map(str::to_string);
    if let Some(session_token) = bearer.or_else(|| cookie_value(req.headers())) {
        if token::is_well_formed(&session_token) {
            let token_hash = token::hash(&session_token);
            db::run(&state.pool, move |conn| {
                store::delete_by_token_hash(conn, &token_hash).map_err(AppError::from)
            })
            .await?;
        }
    }
    let mut removal = Cookie::build(SESSION_COOKIE, "")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.config.cookie_secure)
        .path("/")
        .finish();
    removal.make_removal();
    Ok(HttpResponse::Ok()
        .cookie(removal)
        .json(serde_json::json!({"message": "Logout successful"})))
}

/// The session cookie's value, if the request carries one.
pub fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|value| !value.is_empty())
}
