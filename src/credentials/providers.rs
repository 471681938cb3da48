//! The calls that check a credential with its provider, in each
//! provider's real wire format. Every call goes through
//! [`Outbound`](crate::outbound::Outbound): bounded time, no redirects,
//! SSRF policy.

use actix_web::http::StatusCode;
use reqwest::Url;
use serde::Deserialize;

use crate::error::AppError;
use crate::outbound::{read_body_limited, Outbound};

/// Largest provider answer read during validation.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// The first project a Langfuse key pair can see.
#[derive(Debug, Clone)]
pub struct ProjectInfo {
    pub id: String,
    pub name: String,
}

#[derive(Deserialize)]
struct LangfuseProjects {
    data: Vec<LangfuseProject>,
}

#[derive(Deserialize)]
struct LangfuseProject {
    id: String,
    #[serde(default)]
    name: Option<String>,
}

/// `{base}/{path}` keeping any path prefix of the base URL.
fn endpoint(base: &Url, path: &str) -> Result<Url, AppError> {
    let joined = format!("{}/{}", base.as_str().trim_end_matches('/'), path);
    Url::parse(&joined).map_err(|_| AppError::unprocessable("host is not a valid base URL"))
}

/// What a non-200 answer means for a credential check.
fn unexpected_status(provider: &str, host: &str, path: &str, status: StatusCode) -> AppError {
    let code = status.as_u16();
    match code {
        401 | 403 => AppError::bad_request(format!(
            "{provider} rejected the credentials (HTTP {code} from {host}): check the keys"
        )),
        300..=399 => AppError::bad_request(format!(
            "{provider} at {host} answered with a redirect (HTTP {code}); give the final \
             base URL of the server as host"
        )),
        500..=599 => AppError::new(
            StatusCode::BAD_GATEWAY,
            format!("{provider} at {host} answered HTTP {code}"),
        ),
        _ => AppError::bad_request(format!(
            "{provider} at {host} answered HTTP {code} to GET {path}; is host the base URL \
             of a {provider} server?"
        )),
    }
}

fn host_of(url: &Url) -> String {
    match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or("")),
        None => url.host_str().unwrap_or("").to_string(),
    }
}

/// Sends a check's `GET {path}` to the provider at `host`, asking for JSON,
/// and turns anything but a 200 into the error it means for the
/// credential (`provider` names the provider in it).
async fn send_check(
    outbound: &Outbound,
    request: reqwest::RequestBuilder,
    provider: &str,
    host: &Url,
    path: &str,
) -> Result<reqwest::Response, AppError> {
    let response = request
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| outbound.error(&e, provider))?;
    let status = StatusCode::from_u16(response.status().as_u16())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status != StatusCode::OK {
        return Err(unexpected_status(provider, &host_of(host), path, status));
    }
    Ok(response)
}

/// Langfuse's own auth check: `GET {host}/api/public/projects` with HTTP
/// Basic auth (public key as user, secret key as password) must answer 200
/// with a non-empty `data` array. Returns the first project.
pub async fn check_langfuse(
    outbound: &Outbound,
    host: &Url,
    public_key: &str,
    secret_key: &str,
) -> Result<ProjectInfo, AppError> {
    const PATH: &str = "/api/public/projects";
    let url = endpoint(host, PATH.trim_start_matches('/'))?;
    let request = outbound.get(url).basic_auth(public_key, Some(secret_key));
    let response = send_check(outbound, request, "Langfuse", host, PATH).await?;
    let body = read_body_limited(outbound, response, MAX_ANSWER_BYTES, "Langfuse").await?;
    let projects: LangfuseProjects = serde_json::from_slice(&body).map_err(|_| {
        AppError::bad_request(format!(
            "{} did not answer GET {PATH} with a Langfuse projects list",
            host_of(host)
        ))
    })?;
    let first = projects.data.into_iter().next().ok_or_else(|| {
        AppError::bad_request("Langfuse accepted the keys but they give access to no project")
    })?;
    Ok(ProjectInfo {
        name: first.name.unwrap_or_default(),
        id: first.id,
    })
}

/// The models URL of an OpenAI-compatible base URL: `{host}/v1/models`, or
/// `{host}/models` when the base URL already ends in `/v1`.
pub fn openai_models_url(host: &Url) -> Result<Url, AppError> {
    if host.path().trim_end_matches('/').ends_with("/v1") {
        endpoint(host, "models")
    } else {
        endpoint(host, "v1/models")
    }
}

/// OpenAI-compatible check: `GET {host}/v1/models` with
/// `Authorization: Bearer {secret}` must answer 200.
pub async fn check_openai(
    outbound: &Outbound,
    host: &Url,
    secret_key: &str,
) -> Result<(), AppError> {
    let url = openai_models_url(host)?;
    let path = url.path().to_string();
    let request = outbound.get(url).bearer_auth(secret_key);
    send_check(
        outbound,
        request,
        "The OpenAI-compatible provider",
        host,
        &path,
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_endpoints_under_the_base_url() {
        let base = Url::parse("https://api.example.com").unwrap();
        assert_eq!(
            openai_models_url(&base).unwrap().as_str(),
            "https://api.example.com/v1/models"
        );
        let v1 = Url::parse("https://api.example.com/v1/").unwrap();
        assert_eq!(
            openai_models_url(&v1).unwrap().as_str(),
            "https://api.example.com/v1/models"
        );
        let prefixed = Url::parse("https://example.com/langfuse").unwrap();
        assert_eq!(
            endpoint(&prefixed, "api/public/projects").unwrap().as_str(),
            "https://example.com/langfuse/api/public/projects"
        );
    }
}
