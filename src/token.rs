//! Secret tokens, one family for every kind keygate issues: `sk-` API keys
//! and sign-in session tokens.
//!
//! A token is 32 bytes from the OS random source as URL-safe base64 without
//! padding (43 characters), after its kind's prefix. [`PlainToken`] holds
//! the text in a [`SecretString`], so it never appears in `Debug` output or
//! a log line; only [`TokenDigest`] (the raw SHA-256) and [`TokenHash`] (its
//! hex, the stored form) leave it. Parsing is strict and happens before any
//! database work, so junk costs nothing.

use std::marker::PhantomData;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::error::AppError;

/// Characters after the prefix: base64 of 32 bytes without padding.
pub const BODY_LEN: usize = 43;

/// What tells one kind of token from another.
pub trait TokenKind {
    /// Text every token of this kind starts with.
    const PREFIX: &'static str;
    /// True when a generated body must be drawn again (session tokens never
    /// look like an API key).
    fn reject_body(_body: &str) -> bool {
        false
    }
}

/// `sk-` + 43 characters, as Langflow's keys.
#[derive(Debug, Clone, Copy)]
pub enum ApiKeyKind {}

impl TokenKind for ApiKeyKind {
    const PREFIX: &'static str = "sk-";
}

/// 43 characters that never start like an API key, so a bearer value can
/// always be told apart from a misplaced key.
#[derive(Debug, Clone, Copy)]
pub enum SessionKind {}

impl TokenKind for SessionKind {
    const PREFIX: &'static str = "";
    fn reject_body(body: &str) -> bool {
        body.starts_with(ApiKeyKind::PREFIX)
    }
}

/// The text of a token, held only in memory and never printed.
#[derive(Debug)]
pub struct PlainToken<K> {
    text: SecretString,
    kind: PhantomData<K>,
}

pub type PlainKey = PlainToken<ApiKeyKind>;
pub type SessionToken = PlainToken<SessionKind>;

impl<K: TokenKind> PlainToken<K> {
    /// Total length of a token of this kind.
    pub const LEN: usize = K::PREFIX.len() + BODY_LEN;

    /// Draws 32 bytes from the operating system.
    pub fn generate() -> Result<Self, AppError> {
        loop {
            let body = crate::random::url_safe::<32>()
                .map_err(|e| AppError::internal(format_args!("OS random source failed: {e}")))?;
            if !K::reject_body(&body) {
                return Ok(Self::wrap(format!("{}{body}", K::PREFIX)));
            }
        }
    }

    /// True when `text` has exactly the shape of this kind of token.
    pub fn is_well_formed(text: &str) -> bool {
        text.len() == Self::LEN
            && text.starts_with(K::PREFIX)
            && text.as_bytes()[K::PREFIX.len()..]
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    }

    fn wrap(text: String) -> Self {
        PlainToken {
            text: SecretString::from(text),
            kind: PhantomData,
        }
    }

    /// The text, for the one answer that hands it out (or a cookie).
    pub fn expose(&self) -> &str {
        self.text.expose_secret()
    }

    /// Hands the text over for the one answer that shows it.
    pub fn into_string(self) -> String {
        self.expose().to_string()
    }

    pub fn digest(&self) -> TokenDigest {
        TokenDigest::of(self.expose())
    }

    pub fn hash(&self) -> TokenHash {
        self.digest().to_hash()
    }

    /// The first `len` characters, to tell tokens apart (`sk-AbCdE`).
    pub fn prefix(&self, len: usize) -> String {
        self.expose().chars().take(len).collect()
    }
}

/// The raw SHA-256 of a token's text: the index of in-memory caches.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub fn of(text: &str) -> Self {
        TokenDigest(Sha256::digest(text.as_bytes()).into())
    }

    /// The stored form, for database lookups.
    pub fn to_hash(self) -> TokenHash {
        TokenHash(hex::encode(self.0))
    }

    pub fn fingerprint(&self) -> KeyFingerprint {
        let mut head = [0u8; 16];
        head.copy_from_slice(&self.0[..16]);
        KeyFingerprint(u128::from_be_bytes(head))
    }
}

/// The first 128 bits of a key's SHA-256: what the key filter remembers of
/// each stored key and what instances tell each other when a key is
/// created. Written as the first 32 hex digits of the stored hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct KeyFingerprint(pub u128);

impl KeyFingerprint {
    /// From a stored hash (or its first 32 hex digits); `None` if it is not
    /// hex.
    pub fn from_hex(hash: &str) -> Option<Self> {
        let head = hash.get(..32)?;
        u128::from_str_radix(head, 16).ok().map(KeyFingerprint)
    }

    pub fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }
}

/// Hex SHA-256 of a token's whole text: the only form a token is stored in.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct TokenHash(String);

impl TokenHash {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A `BuildHasher` for maps keyed by [`TokenDigest`]. Hashing a SHA-256
/// again is pointless (it is uniformly distributed and cannot be steered
/// without a preimage), so [`DigestHasher`] just takes 8 of its bytes.
pub type DigestHasherBuilder = std::hash::BuildHasherDefault<DigestHasher>;

#[derive(Clone, Copy, Default)]
pub struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8).take(1) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }

    fn write_usize(&mut self, _: usize) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_the_head_of_the_stored_hash() {
        let digest = TokenDigest::of("sk-example");
        let hash = digest.to_hash();
        let fingerprint = digest.fingerprint();
        assert_eq!(fingerprint.to_hex(), hash.as_str()[..32]);
        assert_eq!(KeyFingerprint::from_hex(hash.as_str()), Some(fingerprint));
        assert_eq!(KeyFingerprint::from_hex("not hex"), None);
    }

    #[test]
    fn generated_keys_have_langflow_shape() {
        let key = PlainKey::generate().unwrap();
        assert_eq!(key.expose().len(), 46);
        assert!(key.expose().starts_with("sk-"));
        assert!(PlainKey::is_well_formed(key.expose()));
        assert_ne!(key.expose(), PlainKey::generate().unwrap().expose());
        assert!(!format!("{key:?}").contains(key.expose()));
    }

    #[test]
    fn session_tokens_never_look_like_keys() {
        let token = SessionToken::generate().unwrap();
        assert_eq!(token.expose().len(), 43);
        assert!(!token.expose().starts_with("sk-"));
        assert!(SessionToken::is_well_formed(token.expose()));
        assert!(!format!("{token:?}").contains(token.expose()));
        assert!(!SessionToken::is_well_formed("short"));
    }

    #[test]
    fn rejects_malformed_keys() {
        let good = PlainKey::generate().unwrap().expose().to_string();
        assert!(!PlainKey::is_well_formed(&good[..45]));
        assert!(!PlainKey::is_well_formed(&format!("{good}A")));
        assert!(!PlainKey::is_well_formed(&good.replacen("sk-", "pk-", 1)));
        assert!(!PlainKey::is_well_formed(&format!("sk-{}", "+".repeat(43))));
        assert!(!PlainKey::is_well_formed(&format!("sk-{}", "é".repeat(21))));
    }

    #[test]
    fn hashes_are_hex_sha256() {
        assert_eq!(
            TokenDigest::of("abc").to_hash().as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
