//! The text of an `sk-` key: generation, strict parsing and hashing.
//!
//! A key is `sk-` followed by the URL-safe, unpadded base64 of 32 bytes from
//! the OS random source (43 characters), as Langflow's keys. Only the SHA-256
//! of the whole text is ever stored. [`PlainKey`] keeps the text out of
//! `Debug` output so it cannot be logged by accident.

use sha2::{Digest, Sha256};

pub const KEY_PREFIX: &str = "sk-";
/// Characters after the prefix: base64 of 32 bytes without padding.
pub const KEY_BODY_LEN: usize = 43;
pub const KEY_LEN: usize = KEY_PREFIX.len() + KEY_BODY_LEN;
/// Characters kept in clear to tell keys apart (`sk-AbCdE`).
pub const DISPLAY_PREFIX_LEN: usize = 8;

/// A full key as handed to its owner once.
pub struct PlainKey(String);

impl std::fmt::Debug for PlainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlainKey(***)")
    }
}

impl PlainKey {
    /// Draws 32 bytes from the operating system.
    pub fn generate() -> Result<Self, rand::rngs::SysError> {
        Ok(PlainKey(format!(
            "{KEY_PREFIX}{}",
            crate::random::url_safe::<32>()?
        )))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }

    pub fn display_prefix(&self) -> String {
        self.0[..DISPLAY_PREFIX_LEN].to_string()
    }
}

/// Hex SHA-256 of a key's whole text: the only form a key is stored in.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct KeyHash(String);

impl KeyHash {
    pub fn of(text: &str) -> Self {
        KeyDigest::of(text).to_hash()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// The raw SHA-256 of a key's text: the in-memory cache's index. Hashing
/// it again is pointless (it is already uniformly distributed and cannot be
/// steered without a preimage), so [`DigestHasher`] just takes 8 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    pub fn of(text: &str) -> Self {
        KeyDigest(Sha256::digest(text.as_bytes()).into())
    }

    /// The stored form, for database lookups.
    pub fn to_hash(self) -> KeyHash {
        KeyHash(hex::encode(self.0))
    }
}

/// A `BuildHasher` for maps keyed by [`KeyDigest`].
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

pub type DigestMap<V> =
    std::collections::HashMap<KeyDigest, V, std::hash::BuildHasherDefault<DigestHasher>>;

/// True when `text` has exactly the shape of a key this service issues:
/// checked before any database work so junk costs nothing.
pub fn is_well_formed(text: &str) -> bool {
    text.len() == KEY_LEN
        && text.starts_with(KEY_PREFIX)
        && text.as_bytes()[KEY_PREFIX.len()..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

/// The masked form Langflow shows in key lists: the first 8 characters,
/// then `*` up to the full length of a key.
pub fn mask(display_prefix: &str) -> String {
    let shown: String = display_prefix.chars().take(DISPLAY_PREFIX_LEN).collect();
    let hidden = KEY_LEN.saturating_sub(shown.chars().count());
    format!("{shown}{}", "*".repeat(hidden))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_langflow_shape() {
        let key = PlainKey::generate().unwrap();
        assert_eq!(key.expose().len(), 46);
        assert!(key.expose().starts_with("sk-"));
        assert!(is_well_formed(key.expose()));
        assert_ne!(key.expose(), PlainKey::generate().unwrap().expose());
        assert!(!format!("{key:?}").contains(key.expose()));
    }

    #[test]
    fn rejects_malformed_keys() {
        let good = PlainKey::generate().unwrap().into_string();
        assert!(!is_well_formed(&good[..45]));
        assert!(!is_well_formed(&format!("{good}A")));
        assert!(!is_well_formed(&good.replacen("sk-", "pk-", 1)));
        assert!(!is_well_formed(&format!("sk-{}", "+".repeat(43))));
        assert!(!is_well_formed(&format!("sk-{}", "é".repeat(21))));
    }

    #[test]
    fn hashes_are_hex_sha256() {
        assert_eq!(
            KeyHash::of("abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn digest_and_hash_agree() {
        assert_eq!(KeyDigest::of("abc").to_hash(), KeyHash::of("abc"));
        let mut map: DigestMap<u8> = DigestMap::default();
        map.insert(KeyDigest::of("a"), 1);
        map.insert(KeyDigest::of("b"), 2);
        assert_eq!(map.get(&KeyDigest::of("b")), Some(&2));
    }

    #[test]
    fn masks_like_langflow() {
        let masked = mask("sk-rZK4y");
        assert_eq!(masked.len(), 46);
        assert_eq!(masked, format!("sk-rZK4y{}", "*".repeat(38)));
    }
}
