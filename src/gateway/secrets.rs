//! SEAM(creds): what the gateway needs from the `creds` branch: the shared
//! outbound client with its SSRF policy (`state.outbound`) and the owner's
//! stored, encrypted secrets (provider credentials and Credential
//! variables). Until `creds` is merged this holds stand-ins that refuse
//! credentials; nothing outside this file knows the difference.

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

/// The shared outbound client (guarded DNS, no redirects, no proxy, no
/// total time-out: the gateway applies its own time-to-first-byte limit).
pub fn client(state: &AppState) -> &reqwest::Client {
    state.outbound.client()
}

/// The SSRF rule for upstream URLs, the same as for provider hosts.
pub fn check_url(state: &AppState, url: &str) -> Result<reqwest::Url, AppError> {
    state.outbound.check_url(url)
}

/// 502 (unreachable), 504 (time-out) or 422 (refused address), naming the
/// host but never the query or a secret.
pub fn upstream_error(state: &AppState, error: &reqwest::Error) -> AppError {
    state.outbound.error(error, "The upstream")
}
