//! SEAM(creds): what the gateway needs from the `creds` branch: the shared
//! outbound client with its SSRF policy (`state.outbound`) and the owner's
//! stored, encrypted secrets (provider credentials and Credential
//! variables). Until `creds` is merged this holds stand-ins that refuse
//! credentials; nothing outside this file knows the difference.

use actix_web::http::StatusCode;

use crate::error::AppError;
use crate::flows::{CredentialRef, SecretSource};
use crate::state::AppState;

/// A decrypted secret, held only for the time of one request.
pub struct Secret {
    /// The public half, where the provider has one (Langfuse's public key).
    pub public: Option<String>,
    pub secret: String,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

pub async fn fetch(
    _state: &AppState,
    _owner_id: &str,
    credential: &CredentialRef,
) -> Result<Secret, AppError> {
    let _ = credential.source()?;
    let _: Option<SecretSource> = None;
    Err(AppError::unavailable(
        "Stored credentials are not available in this build",
    ))
}

pub fn client(_state: &AppState) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

pub fn check_url(_state: &AppState, url: &str) -> Result<reqwest::Url, AppError> {
    reqwest::Url::parse(url).map_err(|_| AppError::unprocessable("invalid upstream URL"))
}

pub fn upstream_error(_state: &AppState, error: &reqwest::Error) -> AppError {
    AppError::new(
        StatusCode::BAD_GATEWAY,
        format!("Upstream request failed: {}", error.is_connect()),
    )
}
