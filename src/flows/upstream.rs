//! A flow's upstream: where its runs go and which of the owner's stored
//! secrets to inject, and how; validated when the flow is saved, parsed
//! once when the flow cache fills.
//!
//! Two forms: a single `url` (and `method`) that runs are sent to, or a
//! `langflow` server and the id of the flow there, from which the gateway
//! derives each of Langflow's per-flow routes (run, advanced run, webhook,
//! file upload).

use actix_web::http::header::HeaderName;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::variables::MAX_NAME_LEN as MAX_VARIABLE_NAME_LEN;

pub const MAX_URL_LEN: usize = 2048;
pub const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
/// The header Langflow reads its API keys from.
pub const LANGFLOW_KEY_HEADER: &str = "x-api-key";

/// Where runs of a flow go, as stored and shown: exactly one of `url` or
/// `langflow` (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// With `url` only; `POST` when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub langflow: Option<LangflowTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialRef>,
}

/// A flow on a Langflow server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LangflowTarget {
    /// The server's base URL (`http://lf:7860`, or with a path prefix when
    /// Langflow sits behind a proxy); `/api/v1/...` is appended.
    pub url: String,
    /// Langflow's id (a UUID) of the flow. Answers that carry it are
    /// rewritten to keygate's flow id, and requests the other way.
    pub flow_id: String,
}

/// Where one call goes, as the gateway sees it.
pub enum Target<'a> {
    /// Every route to this URL, with this method.
    Url {
        url: &'a str,
        method: &'a str,
    },
    Langflow(&'a LangflowTarget),
}

/// Which of the owner's stored secrets to inject, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialRef {
    /// A provider credential: `langfuse`, `openai` or `generic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Or the name of one of the owner's Credential variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variable: Option<String>,
    /// Always set once validated: `bearer` by default, `header` with
    /// `x-api-key` for a Langflow upstream (Langflow's own key header).
    #[serde(rename = "as", default, skip_serializing_if = "Option::is_none")]
    pub inject: Option<Injection>,
    /// The header name, for `"as": "header"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Injection {
    /// `Authorization: Bearer <secret>`.
    #[default]
    Bearer,
    /// `Authorization: Basic` of `public_key:secret` (Langfuse) or `:secret`.
    Basic,
    /// The secret as the value of a named header.
    Header,
}

/// The secret a flow's credential names, decided when the flow is saved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretSource {
    Provider(String),
    Variable(String),
}

/// A [`SecretSource`] borrowed from where it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretSourceRef<'a> {
    Provider(&'a str),
    Variable(&'a str),
}

impl SecretSource {
    pub fn borrowed(&self) -> SecretSourceRef<'_> {
        match self {
            SecretSource::Provider(name) => SecretSourceRef::Provider(name),
            SecretSource::Variable(name) => SecretSourceRef::Variable(name),
        }
    }
}

impl SecretSourceRef<'_> {
    pub fn to_owned(self) -> SecretSource {
        match self {
            SecretSourceRef::Provider(name) => SecretSource::Provider(name.to_string()),
            SecretSourceRef::Variable(name) => SecretSource::Variable(name.to_string()),
        }
    }
}

impl CredentialRef {
    /// How the secret is sent (set by [`Upstream::validated`]).
    pub fn injection(&self) -> Injection {
        self.inject.unwrap_or_default()
    }

    pub fn source(&self) -> Result<SecretSource, AppError> {
        self.source_ref().map(SecretSourceRef::to_owned)
    }

    /// [`Self::source`] without copying the name (for cache lookups).
    pub fn source_ref(&self) -> Result<SecretSourceRef<'_>, AppError> {
        match (&self.provider, &self.variable) {
            (Some(provider), None) => Ok(SecretSourceRef::Provider(provider)),
            (None, Some(variable)) => Ok(SecretSourceRef::Variable(variable)),
            _ => Err(AppError::unprocessable(
                "upstream.credential needs exactly one of \"provider\" or \"variable\"",
            )),
        }
    }
}

/// Headers a flow may not set through `"as": "header"`: they frame the
/// request or belong to the connection.
const RESERVED_HEADERS: [&str; 12] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "cookie",
];

/// Checks a URL given for `field`: http(s), a host, no user name or
/// password, no fragment. Returns it normalised.
fn check_url(field: &str, url: &str) -> Result<reqwest::Url, AppError> {
    let url = url.trim();
    if url.len() > MAX_URL_LEN {
        return Err(AppError::unprocessable(format!(
            "{field} must be at most {MAX_URL_LEN} characters"
        )));
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| AppError::unprocessable(format!("{field} is not a valid URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(AppError::unprocessable(format!(
            "{field} must be an http:// or https:// URL"
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(AppError::unprocessable(format!("{field} must name a host")));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(AppError::unprocessable(format!(
            "{field} must not carry a user name or password; store the secret as a credential"
        )));
    }
    if parsed.fragment().is_some() {
        return Err(AppError::unprocessable(format!(
            "{field} must not have a #fragment"
        )));
    }
    Ok(parsed)
}

impl LangflowTarget {
    fn validated(self) -> Result<Self, AppError> {
        let parsed = check_url("upstream.langflow.url", &self.url)?;
        if parsed.query().is_some() {
            return Err(AppError::unprocessable(
                "upstream.langflow.url must be the server's base URL, without a ?query",
            ));
        }
        let flow_id = uuid::Uuid::parse_str(self.flow_id.trim()).map_err(|_| {
            AppError::unprocessable(
                "upstream.langflow.flow_id must be the flow's id on the Langflow server (a UUID)",
            )
        })?;
        Ok(LangflowTarget {
            url: parsed.as_str().trim_end_matches('/').to_string(),
            flow_id: flow_id.to_string(),
        })
    }

    /// The URL of one of Langflow's per-flow routes, e.g. `run` or
    /// `files/upload`: `{url}/api/v1/{route}/{flow_id}`.
    pub fn route_url(&self, route: &str) -> String {
        format!("{}/api/v1/{route}/{}", self.url, self.flow_id)
    }
}

impl Upstream {
    /// Where calls go (the upstream is validated, so one form is set).
    pub fn target(&self) -> Result<Target<'_>, AppError> {
        match (&self.url, &self.langflow) {
            (Some(url), None) => Ok(Target::Url {
                url,
                method: self.method.as_deref().unwrap_or("POST"),
            }),
            (None, Some(langflow)) => Ok(Target::Langflow(langflow)),
            _ => Err(AppError::internal("stored upstream has no single target")),
        }
    }

    /// The URL the SSRF rule is applied to when the flow is saved, and
    /// the field that holds it.
    pub fn checked_url(&self) -> Option<(&'static str, &str)> {
        match (&self.url, &self.langflow) {
            (Some(url), _) => Some(("upstream.url", url)),
            (None, Some(langflow)) => Some(("upstream.langflow.url", &langflow.url)),
            (None, None) => None,
        }
    }

    /// Checks and normalises an upstream as given by a user.
    pub fn validated(mut self) -> Result<Self, AppError> {
        match (self.url.take(), self.langflow.take()) {
            (Some(url), None) => {
                self.url = Some(check_url("upstream.url", &url)?.to_string());
                let method = self.method.as_deref().unwrap_or("POST");
                let method = method.trim().to_ascii_uppercase();
                if !METHODS.contains(&method.as_str()) {
                    return Err(AppError::unprocessable(format!(
                        "upstream.method must be one of {}",
                        METHODS.join(", ")
                    )));
                }
                self.method = Some(method);
            }
            (None, Some(langflow)) => {
                if self.method.is_some() {
                    return Err(AppError::unprocessable(
                        "upstream.method is only used with \"url\"; Langflow's routes are all POST",
                    ));
                }
                self.langflow = Some(langflow.validated()?);
            }
            _ => {
                return Err(AppError::unprocessable(
                    "upstream needs exactly one of \"url\" (one URL for every run) or \"langflow\" ({\"url\", \"flow_id\"} of a Langflow server)",
                ))
            }
        }
        let langflow = self.langflow.is_some();
        if let Some(credential) = &mut self.credential {
            match credential.source()? {
                SecretSource::Provider(provider) => {
                    let provider =
                        crate::credentials::Provider::parse(&provider).map_err(|_| {
                            AppError::unprocessable(
                            "upstream.credential.provider must be one of langfuse, openai, generic",
                        )
                        })?;
                    credential.provider = Some(provider.as_str().to_string());
                }
                SecretSource::Variable(name) => {
                    if name.trim().is_empty() || name.chars().count() > MAX_VARIABLE_NAME_LEN {
                        return Err(AppError::unprocessable(format!(
                            "upstream.credential.variable must be a variable name of 1 to {MAX_VARIABLE_NAME_LEN} characters"
                        )));
                    }
                }
            }
            if credential.inject.is_none() {
                if langflow && credential.header.is_none() {
                    credential.inject = Some(Injection::Header);
                    credential.header = Some(LANGFLOW_KEY_HEADER.into());
                } else {
                    credential.inject = Some(Injection::Bearer);
                }
            }
            match (credential.injection(), credential.header.as_deref()) {
                (Injection::Header, Some(name)) => {
                    let name = name.trim().to_ascii_lowercase();
                    if HeaderName::from_bytes(name.as_bytes()).is_err()
                        || RESERVED_HEADERS.contains(&name.as_str())
                    {
                        return Err(AppError::unprocessable(format!(
                            "upstream.credential.header {name:?} is not a header keygate can set"
                        )));
                    }
                    credential.header = Some(name);
                }
                (Injection::Header, None) => {
                    return Err(AppError::unprocessable(
                        "upstream.credential.header is required with \"as\": \"header\"",
                    ))
                }
                (_, Some(_)) => {
                    return Err(AppError::unprocessable(
                        "upstream.credential.header is only used with \"as\": \"header\"",
                    ))
                }
                (_, None) => {}
            }
        }
        Ok(self)
    }

    /// Reads a flow's stored upstream column, when it has one.
    pub fn from_column(text: Option<&str>) -> Result<Option<Self>, AppError> {
        text.map(Self::from_stored).transpose()
    }

    /// Reads the stored JSON (written by [`Upstream::validated`]).
    pub fn from_stored(text: &str) -> Result<Self, AppError> {
        serde_json::from_str(text)
            .map_err(|e| AppError::internal(format_args!("stored upstream unreadable: {e}")))
    }
}
