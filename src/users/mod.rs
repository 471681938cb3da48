//! Users: the superuser-only admin API on Langflow's routes, optional
//! public sign-up, `whoami`, sign-in ([`signin`]) and the first
//! superuser's bootstrap.

pub mod check;
pub mod password;
pub mod signin;
pub mod store;
pub mod throttle;

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::audit::{self, Action, Entry, Origin};
use crate::bus::Event;
use crate::config::Config;
use crate::db::{self, DbConnection};
use crate::error::{extractors, AppError};
use crate::identity::{
    AuthUser, ById, MaybePrincipal, Principal, MISSING_CREDENTIALS, NOT_ENOUGH_PRIVILEGES,
};
use crate::routing;
use crate::sessions;
use crate::state::AppState;
use check::PasswordCheck;
use throttle::SigninThrottle;

pub const MAX_USERNAME_LEN: usize = 64;
const MAX_PAGE_SIZE: i64 = 1000;

/// `whoami`, the call scripts make most after runs, mounted at the root
/// before the `/api/v1` scope (see `server::configure`).
pub fn hot_routes(cfg: &mut web::ServiceConfig) {
    routing::resources!(root cfg {
        "/users/whoami": get whoami;
    });
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    routing::resources!(cfg {
        "/users": get list_users, post create_user;
        "/users/{id}" ["user"]: patch update_user, delete delete_user;
    });
    // The one route without a `path/` form (it never had one).
    routing::record_api("patch", "/users/{id}/reset-password");
    cfg.service(
        web::resource("/users/{id}/reset-password")
            .app_data(extractors::uuid_path("user"))
            .route(web::patch().to(reset_password)),
    );
}

/// The account domain's long-lived parts: the sign-in throttle and the
/// queue in front of the password hashing thread, each app data of its own.
pub fn services(config: &Config) -> (Arc<throttle::SigninThrottle>, Arc<password::HashQueue>) {
    (
        Arc::new(throttle::SigninThrottle::new(config.login_limits)),
        Arc::new(password::HashQueue::new(config.password_queue)),
    )
}

/// A user as the API shows it (Langflow's `UserRead`, including its
/// `create_at` spelling, plus `created_at`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub profile_image: Option<String>,
    pub is_active: bool,
    pub is_superuser: bool,
    pub create_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
}

impl From<&AuthUser> for UserView {
    fn from(user: &AuthUser) -> Self {
        UserView {
            id: user.id.clone(),
            username: user.username.clone(),
            profile_image: None,
            is_active: user.is_active,
            is_superuser: user.is_superuser,
            create_at: user.created_at.and_utc(),
            created_at: user.created_at.and_utc(),
            updated_at: user.updated_at.and_utc(),
            last_login_at: user.last_login_at.map(|t| t.and_utc()),
        }
    }
}

impl From<store::User> for UserView {
    fn from(user: store::User) -> Self {
        UserView::from(&AuthUser::from(user))
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct UserList {
    total_count: i64,
    users: Vec<UserView>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Page {
    #[serde(default)]
    skip: Option<i64>,
    #[serde(default)]
    limit: Option<i64>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateUserRequest {
    username: String,
    password: String,
    #[serde(default)]
    is_active: Option<bool>,
    #[serde(default)]
    is_superuser: Option<bool>,
    /// Sent by Langflow's front end; accepted and ignored.
    #[serde(default)]
    #[allow(dead_code)]
    #[schema(value_type = Option<Value>)]
    optins: Option<serde_json::Value>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateUserRequest {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    is_active: Option<bool>,
    #[serde(default)]
    is_superuser: Option<bool>,
    /// Required when changing one's own password.
    #[serde(default)]
    current_password: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ResetPasswordRequest {
    password: String,
    /// Required when changing one's own password.
    #[serde(default)]
    current_password: Option<String>,
}

pub const PASSWORD_NEEDS_SESSION: &str =
    "Changing a password needs a signed-in session, not an API key";
pub const ACCOUNT_NEEDS_SESSION: &str =
    "Changing an account needs a signed-in session, not an API key; a key may only deactivate";
pub const SUPERUSER_NEEDS_SESSION: &str =
    "Creating a superuser needs a signed-in session, not an API key";
pub const CURRENT_PASSWORD_REQUIRED: &str =
    "current_password is required to change your own password";
pub const CURRENT_PASSWORD_WRONG: &str = "Current password is wrong";

/// Account changes need the person, not a script: a leaked key must not
/// become a password (or a promoted, renamed or reactivated account) that
/// outlives revoking the key. With a key only deactivation is allowed, an
/// emergency brake that hands nobody anything.
fn require_session_for(principal: &Principal, request: &UpdateUserRequest) -> Result<(), AppError> {
    if !principal.is_api_key() {
        return Ok(());
    }
    if request.password.is_some() {
        return Err(AppError::forbidden(PASSWORD_NEEDS_SESSION));
    }
    if request.username.is_some()
        || request.is_superuser.is_some()
        || request.is_active == Some(true)
    {
        return Err(AppError::forbidden(ACCOUNT_NEEDS_SESSION));
    }
    Ok(())
}

/// Changing one's own password takes the current one, checked like a
/// sign-in (throttled; a wrong one is a counted failure): a session left
/// open, or stolen, is not enough to lock its owner out.
async fn check_current_password(
    check: PasswordCheck<'_>,
    req: &HttpRequest,
    origin: &Origin,
    principal: &Principal,
    current: Option<String>,
) -> Result<(), AppError> {
    let current = current
        .filter(|p| !p.is_empty())
        .ok_or_else(|| AppError::unprocessable(CURRENT_PASSWORD_REQUIRED))?;
    let failure = Entry::new(Action::LoginFailure, origin)
        .by(principal)
        .with("method", "current_password");
    let user = check
        .user(req, principal.user.username.clone(), current, failure)
        .await?;
    match user {
        Some(user) if user.id == principal.user.id => Ok(()),
        _ => Err(AppError::forbidden(CURRENT_PASSWORD_WRONG)),
    }
}

/// A username as keygate accepts it (trimmed), or the 422 naming the rule.
pub fn check_username(username: &str) -> Result<String, AppError> {
    let username = username.trim();
    if username.is_empty() {
        return Err(AppError::unprocessable("username is required"));
    }
    if username.chars().count() > MAX_USERNAME_LEN {
        return Err(AppError::unprocessable(format!(
            "username must be at most {MAX_USERNAME_LEN} characters"
        )));
    }
    if username
        .chars()
        .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(AppError::unprocessable(
            "username must not contain spaces or control characters",
        ));
    }
    Ok(username.to_string())
}

/// Served from the principal the request authenticated as: the key cache
/// holds every field shown, kept current through the invalidation bus, and
/// the answer rendered at the first `whoami` of that cached value.
#[utoipa::path(get, path = "/api/v1/users/whoami", tag = "users",
    responses((status = 200, description = "The authenticated user", body = UserView)), security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = [])))]
async fn whoami(principal: Principal) -> Result<HttpResponse, AppError> {
    let body = principal
        .user
        .rendered(|user| {
            serde_json::to_vec(&UserView::from(user))
                .ok()
                .map(web::Bytes::from)
        })
        .ok_or_else(|| AppError::internal("the user could not be serialised"))?;
    Ok(HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(body))
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(Page),
    responses((status = 200, description = "A page of users (superuser only)", body = UserList)), security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = [])))]
async fn list_users(
    state: web::Data<AppState>,
    principal: Principal,
    page: web::Query<Page>,
) -> Result<HttpResponse, AppError> {
    principal.require_superuser()?;
    let skip = page.skip.unwrap_or(0).max(0);
    let limit = page.limit.unwrap_or(10).clamp(1, MAX_PAGE_SIZE);
    let (total_count, users) =
        db::run(&state.pool, move |conn| store::list(conn, skip, limit)).await?;
    Ok(HttpResponse::Ok().json(UserList {
        total_count,
        users: users.into_iter().map(UserView::from).collect(),
    }))
}

/// Superusers create users freely; anyone else only through public sign-up
/// (when enabled), which makes a non-superuser, inactive unless
/// `KEYGATE_NEW_USER_IS_ACTIVE`.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUserRequest,
    responses((status = 201, description = "The new user", body = UserView)),
    security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = []), ()))]
async fn create_user(
    state: web::Data<AppState>,
    hashing: web::Data<password::HashQueue>,
    principal: MaybePrincipal,
    origin: Origin,
    web::Json(request): web::Json<CreateUserRequest>,
) -> Result<HttpResponse, AppError> {
    let by_superuser = principal.0.as_ref().is_some_and(Principal::is_superuser);
    if !by_superuser && !state.config.enable_signup {
        return Err(match principal.0 {
            Some(_) => AppError::forbidden(NOT_ENOUGH_PRIVILEGES),
            None => AppError::unauthorized(MISSING_CREDENTIALS),
        });
    }
    if by_superuser
        && request.is_superuser == Some(true)
        && principal.0.as_ref().is_some_and(Principal::is_api_key)
    {
        return Err(AppError::forbidden(SUPERUSER_NEEDS_SESSION));
    }
    let username = check_username(&request.username)?;
    password::check_strength(&request.password)?;
    let (is_active, is_superuser) = if by_superuser {
        (
            request.is_active.unwrap_or(state.config.new_user_is_active),
            request.is_superuser.unwrap_or(false),
        )
    } else {
        (state.config.new_user_is_active, false)
    };
    let password_hash = hashing.hash(request.password).await?;
    let entry = Entry::new(Action::UserCreate, &origin)
        .by_any(principal.0.as_ref())
        .with("via", if by_superuser { "admin" } else { "signup" });
    let user = db::run(&state.pool, move |conn| {
        audit::within(conn, |conn| {
            let user = store::insert(
                conn,
                store::NewUser {
                    username,
                    password_hash,
                    is_active,
                    is_superuser,
                },
            )?;
            let entry = created_entry(entry, &user);
            Ok((user, vec![entry]))
        })
    })
    .await?;
    Ok(HttpResponse::Created().json(UserView::from(user)))
}

/// A `user.create` entry completed with the new user.
fn created_entry(entry: Entry, user: &store::User) -> Entry {
    entry
        .owner(&*user.id)
        .target(&*user.id)
        .with("username", user.username.as_str())
        .with("is_active", user.is_active)
        .with("is_superuser", user.is_superuser)
}

#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", params(("id" = String, Path, format = "uuid")), request_body = UpdateUserRequest,
    responses((status = 200, description = "The updated user", body = UserView)), security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = [])))]
async fn update_user(
    state: web::Data<AppState>,
    throttle: web::Data<SigninThrottle>,
    hashing: web::Data<password::HashQueue>,
    req: HttpRequest,
    origin: Origin,
    ById { principal, id }: ById,
    web::Json(request): web::Json<UpdateUserRequest>,
) -> Result<HttpResponse, AppError> {
    let is_self = principal.user.id == id;
    if !principal.is_superuser() {
        // A user may change their own password, nothing else.
        let privileged = request.is_active.is_some()
            || request.is_superuser.is_some()
            || request.username.is_some();
        if !is_self || privileged {
            return Err(AppError::forbidden(NOT_ENOUGH_PRIVILEGES));
        }
    }
    require_session_for(&principal, &request)?;
    let username = request
        .username
        .as_deref()
        .map(check_username)
        .transpose()?;
    let entries = update_entries(&origin, &principal, &id, &request, username.as_deref());
    if let Some(p) = &request.password {
        password::check_strength(p)?;
        if is_self {
            let check = PasswordCheck {
                state: &state,
                throttle: &throttle,
                hashing: &hashing,
            };
            check_current_password(check, &req, &origin, &principal, request.current_password)
                .await?;
        }
    }
    let ends_sessions = request.password.is_some() || request.is_active == Some(false);
    // A user changing their own password keeps the session they did it from.
    let keep_session = if is_self && request.is_active != Some(false) {
        principal.session_id().map(str::to_string)
    } else {
        None
    };
    let user_id = id.clone();
    let password_hash = match request.password {
        Some(new_password) => Some(hashing.hash(new_password).await?),
        None => None,
    };
    let user = db::run(&state.pool, move |conn| {
        audit::within_serializable(conn, |conn| {
            let changes = store::UserChanges {
                username,
                password_hash,
                is_active: request.is_active,
                is_superuser: request.is_superuser,
                updated_at: None,
            };
            let user = store::update(conn, &user_id, changes)?;
            if ends_sessions {
                sessions::end_others(conn, &user_id, keep_session.as_deref())?;
            }
            Ok((user, entries))
        })
    })
    .await?;
    Ok(updated(&state, user))
}

/// What a `PATCH /users/{id}` is audited as: `password.change` for a new
/// password, `user.update` with the new values for the other fields.
fn update_entries(
    origin: &Origin,
    principal: &Principal,
    id: &str,
    request: &UpdateUserRequest,
    username: Option<&str>,
) -> Vec<Entry> {
    let mut entries = Vec::new();
    if request.password.is_some() {
        entries.push(
            Entry::new(Action::PasswordChange, origin)
                .by(principal)
                .owner(id)
                .target(id),
        );
    }
    if username.is_some() || request.is_active.is_some() || request.is_superuser.is_some() {
        let mut entry = Entry::new(Action::UserUpdate, origin)
            .by(principal)
            .owner(id)
            .target(id);
        if let Some(username) = username {
            entry = entry.with("username", username);
        }
        if let Some(is_active) = request.is_active {
            entry = entry.with("is_active", is_active);
        }
        if let Some(is_superuser) = request.is_superuser {
            entry = entry.with("is_superuser", is_superuser);
        }
        entries.push(entry);
    }
    entries
}

/// Announces an updated user on the bus (every update moves `updated_at`,
/// which cached principals show) and answers with it.
fn updated(state: &AppState, user: store::User) -> HttpResponse {
    state.bus.publish(Event::UserChanged(user.id.clone()));
    HttpResponse::Ok().json(UserView::from(user))
}

#[utoipa::path(patch, path = "/api/v1/users/{id}/reset-password", tag = "users", params(("id" = String, Path, format = "uuid")),
    request_body = ResetPasswordRequest, responses((status = 200, description = "The updated user", body = UserView)), security(("session_bearer" = []), ("session_cookie" = [])))]
async fn reset_password(
    state: web::Data<AppState>,
    throttle: web::Data<SigninThrottle>,
    hashing: web::Data<password::HashQueue>,
    req: HttpRequest,
    origin: Origin,
    ById { principal, id }: ById,
    web::Json(request): web::Json<ResetPasswordRequest>,
) -> Result<HttpResponse, AppError> {
    let is_self = principal.user.id == id;
    if !is_self && !principal.is_superuser() {
        return Err(AppError::forbidden(NOT_ENOUGH_PRIVILEGES));
    }
    if principal.is_api_key() {
        return Err(AppError::forbidden(PASSWORD_NEEDS_SESSION));
    }
    password::check_strength(&request.password)?;
    if is_self {
        let check = PasswordCheck {
            state: &state,
            throttle: &throttle,
            hashing: &hashing,
        };
        check_current_password(check, &req, &origin, &principal, request.current_password).await?;
    }
    let keep_session = principal.session_id().map(str::to_string);
    let password_hash = hashing.hash(request.password).await?;
    let entry = Entry::new(Action::PasswordChange, &origin)
        .by(&principal)
        .owner(&*id)
        .target(&*id);
    let user = db::run(&state.pool, move |conn| {
        audit::within_serializable(conn, |conn| {
            let changes = store::UserChanges {
                password_hash: Some(password_hash),
                ..Default::default()
            };
            let user = store::update(conn, &id, changes)?;
            // Every other session ends; the one that made the change stays.
            sessions::end_others(conn, &id, keep_session.as_deref())?;
            Ok((user, vec![entry]))
        })
    })
    .await?;
    Ok(updated(&state, user))
}

#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users", params(("id" = String, Path, format = "uuid")),
    responses((status = 200, description = "`{\"detail\": \"User deleted\"}`", body = crate::error::ErrorBody)), security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = [])))]
async fn delete_user(
    state: web::Data<AppState>,
    origin: Origin,
    ById { principal, id }: ById,
) -> Result<HttpResponse, AppError> {
    principal.require_superuser()?;
    if principal.user.id == id {
        return Err(AppError::bad_request(
            "You can't delete your own user account",
        ));
    }
    let user_id = id.clone();
    let entry = Entry::new(Action::UserDelete, &origin)
        .by(&principal)
        .owner(&*id)
        .target(&*id);
    db::run(&state.pool, move |conn| {
        audit::within_serializable(conn, |conn| {
            let user = store::delete(conn, &user_id)?;
            Ok(((), vec![entry.with("username", user.username)]))
        })
    })
    .await?;
    state.bus.publish(Event::UserChanged(id));
    Ok(HttpResponse::Ok().json(serde_json::json!({"detail": "User deleted"})))
}

/// Creates the first superuser when none exists. Returns the generated
/// password when `KEYGATE_SUPERUSER_PASSWORD` was not set, for the caller
/// to print once to the terminal (never to the log).
pub fn ensure_superuser(
    conn: &mut DbConnection,
    config: &Config,
) -> Result<Option<String>, AppError> {
    if store::any_superuser(conn)? {
        return Ok(None);
    }
    let username = check_username(&config.superuser)?;
    let (password_text, generated) = match &config.superuser_password {
        Some(p) => (secrecy::ExposeSecret::expose_secret(p).to_string(), false),
        None => (password::generate()?, true),
    };
    // The operator chose this password explicitly: a weak one is warned
    // about, not refused (the API still enforces the minimum for others).
    if let Err(e) = password::check_strength(&password_text) {
        tracing::warn!("KEYGATE_SUPERUSER_PASSWORD: {}", e.detail());
    }
    if password_text.is_empty() {
        return Err(AppError::unprocessable(
            "KEYGATE_SUPERUSER_PASSWORD is empty",
        ));
    }
    let password_hash = password::hash(&password_text)?;
    if let Some(existing) = store::find_by_username(conn, &username)? {
        return Err(AppError::conflict(format!(
            "cannot create superuser {:?}: a regular user {} already has that name",
            username, existing.id
        )));
    }
    let new = store::NewUser {
        username: username.clone(),
        password_hash,
        is_active: true,
        is_superuser: true,
    };
    insert_audited(conn, new, "bootstrap")?;
    tracing::info!(username = %username, "created the first superuser");
    Ok(generated.then_some(password_text))
}

/// Creates a user outside a request (`via`: `bootstrap`, `command_line`),
/// audited as `user.create` with no actor and no address.
pub fn insert_audited(
    conn: &mut DbConnection,
    new: store::NewUser,
    via: &'static str,
) -> Result<store::User, AppError> {
    audit::within(conn, |conn| {
        let user = store::insert(conn, new)?;
        let entry =
            created_entry(Entry::new(Action::UserCreate, &Origin::NONE), &user).with("via", via);
        Ok((user, vec![entry]))
    })
}
