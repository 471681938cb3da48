//! Sign-in and sign-out: server-side sessions carried by an HttpOnly,
//! SameSite=Strict cookie or returned as a bearer token.

pub mod store;
pub mod token;

use actix_web::cookie::{time, Cookie, SameSite};
use actix_web::http::header::{self, HeaderMap};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::db;
use crate::error::AppError;
use crate::state::AppState;
use crate::users::{password, store as users_store};

pub const SESSION_COOKIE: &str = "keygate_session";
const WRONG_CREDENTIALS: &str = "Incorrect username or password";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout));
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
}

/// Accepts `application/x-www-form-urlencoded` (as Langflow) or JSON.
fn parse_login(req: &HttpRequest, body: &[u8]) -> Result<LoginRequest, AppError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
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

    db::run(&state.pool, move |conn| {
        let user = users_store::find_by_username(conn, username.trim())?;
        let Some(user) = user else {
            password::verify(&password_text, password::dummy_hash());
            return Err(AppError::unauthorized(WRONG_CREDENTIALS));
        };
        if !password::verify(&password_text, &user.password_hash) {
            return Err(AppError::unauthorized(WRONG_CREDENTIALS));
        }
        if !user.is_active {
            return Err(AppError::unauthorized("Inactive user"));
        }
        let now = db::now();
        let expires_at =
            now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(12));
        users_store::record_login(conn, &user.id)?;
        store::delete_expired(conn, now)?;
        store::create(conn, &user.id, &token_hash, now, expires_at)?;
        Ok(())
    })
    .await?;

    let cookie = Cookie::build(SESSION_COOKIE, session_token.clone())
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.config.cookie_secure)
        .path("/")
        .max_age(time::Duration::seconds(
            i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
        ))
        .finish();
    Ok(HttpResponse::Ok()
        .cookie(cookie)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(LoginResponse {
            access_token: session_token,
            token_type: "bearer",
        }))
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
