//! A flow's upstream: where its runs go and which of the owner's stored
//! secrets to inject, and how; validated when the flow is saved, parsed
//! once when the flow cache fills.

use actix_web::http::header::HeaderName;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::variables::MAX_NAME_LEN as MAX_VARIABLE_NAME_LEN;

pub const MAX_URL_LEN: usize = 2048;
pub const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Where runs of a flow go, as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub url: String,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialRef>,
}

fn default_method() -> String {
    "POST".into()
}

/// Which of the owner's stored secrets to inject, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialRef {
    /// A provider credential: `langfuse`, `openai` or `generic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Or the name of one of the owner's Credential variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variable: Option<String>,
    #[serde(rename = "as", default)]
    pub inject: Injection,
    /// The header name, for `"as": "header"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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

impl CredentialRef {
    pub fn source(&self) -> Result<SecretSource, AppError> {
        match (&self.provider, &self.variable) {
            (Some(provider), None) => Ok(SecretSource::Provider(provider.clone())),
            (None, Some(variable)) => Ok(SecretSource::Variable(variable.clone())),
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

impl Upstream {
    /// Checks and normalises an upstream as given by a user.
    pub fn validated(mut self) -> Result<Self, AppError> {
        let url = self.url.trim();
        if url.len() > MAX_URL_LEN {
            return Err(AppError::unprocessable(format!(
                "upstream.url must be at most {MAX_URL_LEN} characters"
            )));
        }
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            AppError::unprocessable(format!("upstream.url is not a valid URL: {e}"))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(AppError::unprocessable(
                "upstream.url must be an http:// or https:// URL",
            ));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(AppError::unprocessable("upstream.url must name a host"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(AppError::unprocessable(
                "upstream.url must not carry a user name or password; store the secret as a credential",
            ));
        }
        if parsed.fragment().is_some() {
            return Err(AppError::unprocessable(
                "upstream.url must not have a #fragment",
            ));
        }
        self.url = parsed.to_string();
        self.method = self.method.trim().to_ascii_uppercase();
        if !METHODS.contains(&self.method.as_str()) {
            return Err(AppError::unprocessable(format!(
                "upstream.method must be one of {}",
                METHODS.join(", ")
            )));
        }
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
            match (credential.inject, credential.header.as_deref()) {
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
