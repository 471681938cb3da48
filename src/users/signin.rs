//! Sign-in and sign-out on Langflow's routes: `POST /api/v1/login` (form
//! or JSON), `POST /api/v1/logout`, the session's CSRF token for pages
//! (`GET /api/v1/session`) and `GET /api/v1/auto_login` when
//! `KEYGATE_AUTO_LOGIN` is on. Sessions themselves belong to `sessions`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::{password, store, UserView};
use crate::bus::Event;
use crate::db;
use crate::error::AppError;
use crate::identity::{Principal, Resolved};
use crate::sessions;
use crate::state::AppState;
use crate::token::SessionToken;

const WRONG_CREDENTIALS: &str = "Incorrect username or password";
pub const AUTO_LOGIN_DISABLED: &str =
    "Auto login is disabled; sign in with a username and password";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout))
        .route("/session", web::get().to(current_session))
        .route("/auto_login", web::get().to(auto_login));
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

    // The password is checked between two short database calls, so a flood
    // of sign-ins waits for the hashing thread without holding connections.
    let lookup = username.trim().to_string();
    let user = db::run(&state.pool, move |conn| {
        store::find_by_username(conn, &lookup)
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
    let ttl = state.config.session_ttl;
    let user_id = user.id;
    let (user_id, token) = db::run(&state.pool, move |conn| {
        store::record_login(conn, &user_id)?;
        let token = sessions::start(conn, &user_id, ttl)?;
        Ok::<_, AppError>((user_id, token))
    })
    .await?;
    state.bus.publish(Event::UserChanged(user_id));
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

#[derive(Serialize)]
struct SessionView {
    csrf_token: String,
    user: UserView,
}

/// The signed-in user and the session's CSRF token. Only for sessions: a
/// request with an API key has no session to describe.
async fn current_session(principal: Principal) -> Result<HttpResponse, AppError> {
    let csrf_token = principal
        .csrf_token()
        .ok_or_else(|| {
            AppError::bad_request("This route describes a sign-in session; an API key has none")
        })?
        .to_string();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(SessionView {
            csrf_token,
            user: UserView::from(&*principal.user),
        }))
}

/// Langflow's auto-login: with `KEYGATE_AUTO_LOGIN=true`, anyone who can
/// reach keygate gets a session as the superuser named by
/// `KEYGATE_SUPERUSER`, without a password. Refused (400) otherwise, and
/// (403) for a host that is not named or a cross-site request (see
/// `hosts::auto_login_refusal`).
async fn auto_login(
    state: web::Data<AppState>,
    req: HttpRequest,
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
        store::record_login(conn, &user.id)?;
        let token = sessions::start(conn, &user.id, ttl)?;
        Ok::<_, AppError>((user.id, token))
    })
    .await?;
    // `last_login_at` changed: cached principals of this user are stale.
    state.bus.publish(Event::UserChanged(user_id));
    Ok(session_response(&state, token))
}

/// Ends the session the request came with (cookie or bearer, as resolved
/// by the middleware) and clears the cookie. Always succeeds, so a stale
/// cookie can still sign out.
async fn logout(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, AppError> {
    let session_id = Resolved::take(&req)
        .ok()
        .flatten()
        .and_then(|principal| principal.session_id().map(str::to_string));
    if let Some(session_id) = session_id {
        db::run(&state.pool, move |conn| sessions::end(conn, &session_id)).await?;
    }
    Ok(HttpResponse::Ok()
        .cookie(sessions::removal_cookie(&state.config))
        .json(serde_json::json!({"message": "Logout successful"})))
}
