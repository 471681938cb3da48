//! Provider credentials: one per user per provider (`langfuse`, `openai`
//! for any OpenAI-compatible base URL, `generic` for a secret that is not
//! validated), under `/api/v1/providers`. A credential is checked with its
//! provider before it is stored, its secret is encrypted with
//! `state.secrets`, and it is never sent back in full.
//!
//! Other domains (the gateway) read a credential with [`load_decrypted`].

pub mod providers;
pub mod store;

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::audit::{self, Action, Entry, Origin};
use crate::bus::Event;
use crate::db::{self, DbConnection};
use crate::error::AppError;
use crate::identity::Principal;
use crate::routing;
use crate::state::AppState;
use crate::validate::{optional_text, required_text};

/// Longest accepted secret or public key, in characters.
pub const MAX_KEY_LEN: usize = 4096;
/// Longest accepted host URL, in characters.
pub const MAX_HOST_LEN: usize = 2048;
const NOT_FOUND: &str = "No credential stored for this provider";

pub fn routes(cfg: &mut web::ServiceConfig) {
    routing::resources!(cfg {
        "/providers": get list;
        "/providers/{provider}": get read, post save, put save, delete remove;
    });
}

/// The providers keygate knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Langfuse,
    OpenAi,
    Generic,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::Langfuse, Provider::OpenAi, Provider::Generic];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Langfuse => "langfuse",
            Provider::OpenAi => "openai",
            Provider::Generic => "generic",
        }
    }

    /// Parses a path segment; 404 for an unknown provider (no such resource).
    pub fn parse(text: &str) -> Result<Self, AppError> {
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str() == text.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                AppError::not_found(format!(
                    "Unknown provider {text:?}: expected langfuse, openai or generic"
                ))
            })
    }
}

/// A credential with its secret decrypted, for the gateway to inject.
#[derive(Debug, Clone)]
pub struct DecryptedCredential {
    pub provider: Provider,
    pub host: Option<String>,
    pub public_key: Option<String>,
    pub secret_key: SecretString,
}

/// The user's credential for `provider`, decrypted; `None` when none is
/// stored.
pub async fn load_decrypted(
    state: &AppState,
    user_id: &str,
    provider: Provider,
) -> Result<Option<DecryptedCredential>, AppError> {
    let user_id = user_id.to_string();
    let stored = db::run(&state.pool, move |conn| {
        store::find_for_user(conn, &user_id, provider.as_str())
    })
    .await?;
    stored
        .map(|c| {
            Ok(DecryptedCredential {
                provider,
                secret_key: SecretString::from(state.secrets.decrypt(&c.secret_enc)?),
                host: c.host,
                public_key: c.public_key,
            })
        })
        .transpose()
}

/// Prefixes providers put in front of every secret: showing them reveals
/// nothing. Longest first.
const PUBLIC_PREFIXES: [&str; 4] = ["sk-proj-", "sk-lf-", "pk-lf-", "sk-"];

/// Characters after the prefix a secret needs before its last 4 are shown.
const MIN_LEN_FOR_TAIL: usize = 16;

/// The known prefix, then at most the last 4 characters: `sk-lf-…0001`.
/// A secret with fewer than 16 characters after its prefix shows none of
/// them (`sk-********`, `********`).
pub fn mask(secret: &str) -> String {
    let prefix = PUBLIC_PREFIXES
        .iter()
        .find(|prefix| secret.starts_with(*prefix))
        .copied()
        .unwrap_or_default();
    let rest: Vec<char> = secret[prefix.len()..].chars().collect();
    if rest.len() < MIN_LEN_FOR_TAIL {
        return format!("{prefix}********");
    }
    let tail: String = rest[rest.len() - 4..].iter().collect();
    format!("{prefix}…{tail}")
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SaveRequest {
    #[serde(default)]
    secret_key: Option<String>,
    #[serde(default)]
    public_key: Option<String>,
    #[serde(default)]
    host: Option<String>,
}

/// Live project details of a Langfuse credential (or why they are missing).
#[derive(Serialize, utoipa::ToSchema)]
struct ProjectFields {
    project_id: Option<String>,
    project_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    project_error: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct CredentialView {
    provider: String,
    host: Option<String>,
    public_key: Option<String>,
    /// Masked.
    secret_key: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    project: Option<ProjectFields>,
}

impl CredentialView {
    fn new(stored: store::StoredCredential, plain_secret: &str) -> Self {
        CredentialView {
            provider: stored.provider,
            host: stored.host,
            public_key: stored.public_key,
            secret_key: mask(plain_secret),
            created_at: stored.created_at.and_utc(),
            updated_at: stored.updated_at.and_utc(),
            project: None,
        }
    }
}

/// Checks `host` and gives it back normalised (no trailing slash).
fn check_host(state: &AppState, host: &str) -> Result<reqwest::Url, AppError> {
    let url = state
        .outbound
        .check_url(host)
        .map_err(|e| AppError::unprocessable(format!("host: {}", e.detail())))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(AppError::unprocessable(
            "host: give the base URL of the server, without a query or fragment",
        ));
    }
    Ok(url)
}

fn host_text(url: &reqwest::Url) -> String {
    url.as_str().trim_end_matches('/').to_string()
}

#[utoipa::path(method(post, put), path = "/api/v1/providers/{provider}", tag = "provider credentials", params(("provider" = String, Path, description = "`langfuse`, `openai` or `generic` (any case)")),
    request_body = SaveRequest, responses((status = 200, description = "The stored credential, masked", body = CredentialView)), security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = [])))]
async fn save(
    state: web::Data<AppState>,
    principal: Principal,
    origin: Origin,
    path: web::Path<String>,
    web::Json(request): web::Json<SaveRequest>,
) -> Result<HttpResponse, AppError> {
    let provider = Provider::parse(&path)?;
    let secret_key = required_text("secret_key", request.secret_key, MAX_KEY_LEN)?;
    let (host, public_key, project) = match provider {
        Provider::Langfuse => {
            let public_key = required_text("public_key", request.public_key, MAX_KEY_LEN)?;
            let host = required_text("host", request.host, MAX_HOST_LEN)?;
            let url = check_host(&state, &host)?;
            let project =
                providers::check_langfuse(&state.outbound, &url, &public_key, &secret_key).await?;
            (Some(host_text(&url)), Some(public_key), Some(project))
        }
        Provider::OpenAi => {
            // A public key means nothing to an OpenAI-compatible API; it is
            // accepted (clients send one body to every provider) and not stored.
            optional_text("public_key", request.public_key, MAX_KEY_LEN)?;
            let host = required_text("host", request.host, MAX_HOST_LEN)?;
            let url = check_host(&state, &host)?;
            providers::check_openai(&state.outbound, &url, &secret_key).await?;
            (Some(host_text(&url)), None, None)
        }
        Provider::Generic => {
            let public_key = optional_text("public_key", request.public_key, MAX_KEY_LEN)?;
            let host = match optional_text("host", request.host, MAX_HOST_LEN)? {
                Some(host) => Some(host_text(&check_host(&state, &host)?)),
                None => None,
            };
            (host, public_key, None)
        }
    };
    let secret_enc = state.secrets.encrypt(&secret_key)?;
    let user_id = principal.user.id.clone();
    let entry = Entry::new(Action::CredentialSave, &origin)
        .by(&principal)
        .with("provider", provider.as_str());
    let stored = db::run(&state.pool, move |conn| {
        audit::within(conn, |conn| {
            let stored = store::upsert(
                conn,
                store::Upsert {
                    user_id: &user_id,
                    provider: provider.as_str(),
                    host: host.as_deref(),
                    public_key: public_key.as_deref(),
                    secret_enc: &secret_enc,
                },
            )?;
            let entry = entry
                .target(&*stored.id)
                .with("host", stored.host.clone())
                .with("replaced", stored.created_at != stored.updated_at);
            Ok((stored, vec![entry]))
        })
    })
    .await?;
    state
        .bus
        .publish(Event::SecretsChanged(principal.user.id.clone()));
    tracing::info!(
        user_id = %principal.user.id,
        provider = provider.as_str(),
        "provider credential saved"
    );
    let mut view = CredentialView::new(stored, &secret_key);
    view.project = project.map(|p| ProjectFields {
        project_id: Some(p.id),
        project_name: Some(p.name),
        project_error: None,
    });
    Ok(routing::no_store_json(view))
}

#[utoipa::path(get, path = "/api/v1/providers/{provider}", tag = "provider credentials", params(("provider" = String, Path, description = "`langfuse`, `openai` or `generic` (any case)")),
    responses((status = 200, description = "The caller's credential, masked", body = CredentialView)), security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = [])))]
async fn read(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let provider = Provider::parse(&path)?;
    let user_id = principal.user.id.clone();
    let stored = db::run(&state.pool, move |conn| {
        store::find_for_user(conn, &user_id, provider.as_str())
    })
    .await?
    .ok_or_else(|| AppError::not_found(NOT_FOUND))?;
    let secret = state.secrets.decrypt(&stored.secret_enc)?;
    let host = stored.host.clone();
    let public_key = stored.public_key.clone();
    let mut view = CredentialView::new(stored, &secret);
    if provider == Provider::Langfuse {
        let live = match (host, public_key) {
            (Some(host), Some(public_key)) => match state.outbound.check_url(&host) {
                Ok(url) => {
                    providers::check_langfuse(&state.outbound, &url, &public_key, &secret).await
                }
                Err(e) => Err(e),
            },
            _ => Err(AppError::bad_request("the stored credential has no host")),
        };
        view.project = Some(match live {
            Ok(p) => ProjectFields {
                project_id: Some(p.id),
                project_name: Some(p.name),
                project_error: None,
            },
            Err(e) => ProjectFields {
                project_id: None,
                project_name: None,
                project_error: Some(e.detail().to_string()),
            },
        });
    }
    Ok(HttpResponse::Ok().json(view))
}

#[utoipa::path(get, path = "/api/v1/providers", tag = "provider credentials",
    responses((status = 200, description = "The caller's credentials, masked", body = Vec<CredentialView>)), security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = [])))]
async fn list(state: web::Data<AppState>, principal: Principal) -> Result<HttpResponse, AppError> {
    let user_id = principal.user.id.clone();
    let stored = db::run(&state.pool, move |conn| {
        store::list_for_user(conn, &user_id)
    })
    .await?;
    let views = stored
        .into_iter()
        .map(|c| {
            let secret = state.secrets.decrypt(&c.secret_enc)?;
            Ok(CredentialView::new(c, &secret))
        })
        .collect::<Result<Vec<_>, AppError>>()?;
    Ok(HttpResponse::Ok().json(views))
}

#[utoipa::path(delete, path = "/api/v1/providers/{provider}", tag = "provider credentials", params(("provider" = String, Path, description = "`langfuse`, `openai` or `generic` (any case)")),
    responses((status = 200, description = "`true`", body = bool, content_type = "application/json")), security(("api_key_header" = []), ("api_key_query" = []), ("session_bearer" = []), ("session_cookie" = [])))]
async fn remove(
    state: web::Data<AppState>,
    principal: Principal,
    origin: Origin,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let provider = Provider::parse(&path)?;
    let user_id = principal.user.id.clone();
    let event = Event::SecretsChanged(user_id.clone());
    let entry = Entry::new(Action::CredentialDelete, &origin)
        .by(&principal)
        .with("provider", provider.as_str());
    let delete = move |conn: &mut DbConnection| {
        audit::within(conn, |conn| {
            let Some(stored) = store::find_for_user(conn, &user_id, provider.as_str())? else {
                return Ok((false, Vec::new()));
            };
            let deleted = store::delete_for_user(conn, &user_id, provider.as_str())?;
            Ok((deleted, vec![entry.target(stored.id)]))
        })
    };
    state.delete_or_404(delete, NOT_FOUND, event).await?;
    Ok(HttpResponse::Ok().json(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_long_secrets_and_hides_short_ones() {
        assert_eq!(mask("sk-lf-1234567890abcdefWXYZ"), "sk-lf-…WXYZ");
        assert_eq!(mask("sk-proj-abcdefghijklmnop6789"), "sk-proj-…6789");
        assert_eq!(mask("pk-lf-abcdefghijklmnopq"), "pk-lf-…nopq");
        assert_eq!(mask("Q7x9Lm2Pz4Kt"), "********");
        assert_eq!(mask("sk-Q7x9Lm2Pz4Kt"), "sk-********");
        assert_eq!(mask("0123456789abcdef"), "…cdef");
        assert_eq!(mask("0123456789abcde"), "********");
        assert_eq!(mask("sk-gén…ériqué-ñandú-12345"), "sk-…2345");
    }

    #[test]
    fn parses_providers() {
        assert_eq!(Provider::parse("langfuse").unwrap(), Provider::Langfuse);
        assert_eq!(Provider::parse("OpenAI").unwrap(), Provider::OpenAi);
        assert!(Provider::parse("azure").is_err());
    }
}
