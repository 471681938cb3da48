//! Sign-in sessions: server-side rows holding the SHA-256 of a random
//! token, carried by an HttpOnly, SameSite=Strict cookie or sent as
//! `Authorization: Bearer`; each session's CSRF token for pages.
//!
//! This domain owns the session rows and what a token proves
//! ([`authenticate`]); the sign-in routes that hand sessions out live with
//! the accounts they check (`users::signin`).

pub mod store;

use std::sync::Arc;

use actix_web::cookie::{time, Cookie, SameSite};
use actix_web::http::header::{self, HeaderMap};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::db::{self, DbConnection, DbPool};
use crate::error::AppError;
use crate::identity::{reject, Credential, Principal, INVALID_SESSION};
use crate::token::{SessionToken, TokenDigest};

pub const SESSION_COOKIE: &str = "keygate_session";

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

/// The principal a session token stands for: the session exists, has not
/// expired, and its user is active. A malformed token costs no database
/// work.
pub async fn authenticate(
    pool: &DbPool,
    token: &str,
    via_cookie: bool,
) -> Result<Principal, AppError> {
    if !SessionToken::is_well_formed(token) {
        return Err(reject(
            "malformed session token",
            AppError::unauthorized(INVALID_SESSION),
        ));
    }
    let hash = TokenDigest::of(token).to_hash();
    let found = db::run(pool, move |conn| {
        store::find_active(conn, hash.as_str(), db::now())
    })
    .await?;
    match found {
        Some((session_id, expires_at, user)) => Ok(Principal {
            user: Arc::new(user),
            credential: Credential::Session {
                session_id,
                expires_at,
                csrf_token: csrf_token(token),
                via_cookie,
            },
        }),
        None => Err(reject(
            "unknown or expired session",
            AppError::unauthorized(INVALID_SESSION),
        )),
    }
}

/// Stores a new session for `user_id` (dropping expired ones) and returns
/// its token, which exists nowhere else.
pub fn start(
    conn: &mut DbConnection,
    user_id: &str,
    ttl: std::time::Duration,
) -> Result<SessionToken, AppError> {
    let token = SessionToken::generate()?;
    let now = db::now();
    let expires_at = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(12));
    store::delete_expired(conn, now)?;
    store::create(conn, user_id, token.hash().as_str(), now, expires_at)?;
    Ok(token)
}

/// Ends one session.
pub fn end(conn: &mut DbConnection, session_id: &str) -> Result<(), AppError> {
    store::delete(conn, session_id).map(|_| ())
}

/// Ends every session of a user but `keep` (the one making the change).
pub fn end_others(
    conn: &mut DbConnection,
    user_id: &str,
    keep: Option<&str>,
) -> Result<(), AppError> {
    store::delete_for_user_except(conn, user_id, keep).map(|_| ())
}

/// The cookie that carries a new session.
pub fn cookie(config: &Config, token: &SessionToken) -> Cookie<'static> {
    Cookie::build(SESSION_COOKIE, token.expose().to_string())
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(config.cookie_secure)
        .path("/")
        .max_age(time::Duration::seconds(
            i64::try_from(config.session_ttl.as_secs()).unwrap_or(i64::MAX),
        ))
        .finish()
}

/// The cookie that clears the session cookie.
pub fn removal_cookie(config: &Config) -> Cookie<'static> {
    let mut removal = Cookie::build(SESSION_COOKIE, "")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(config.cookie_secure)
        .path("/")
        .finish();
    removal.make_removal();
    removal
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
