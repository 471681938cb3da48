//! Session tokens: 32 random bytes, URL-safe base64. Only their SHA-256 is
//! stored, like API keys.

use sha2::{Digest, Sha256};

use crate::error::AppError;

const TOKEN_LEN: usize = 43;

/// A new token. Tokens never start like an API key (`sk-`), so a bearer
/// value can always be told apart from a misplaced key.
pub fn generate() -> Result<String, AppError> {
    loop {
        let token = crate::random::url_safe::<32>()
            .map_err(|e| AppError::internal(format_args!("OS random source failed: {e}")))?;
        if !token.starts_with(crate::keys::token::KEY_PREFIX) {
            return Ok(token);
        }
    }
}

pub fn is_well_formed(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}
