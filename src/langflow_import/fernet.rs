//! Decryption of Fernet tokens, the format Langflow encrypts its stored
//! secrets with (`cryptography.fernet`): `0x80 ‖ time (8) ‖ IV (16) ‖
//! AES-128-CBC ciphertext ‖ HMAC-SHA256 (32)`, URL-safe base64. The key
//! is 32 bytes: the HMAC key, then the AES key. keygate only reads Fernet;
//! what it imports it encrypts with its own `SecretBox`.

use aes::cipher::BlockCipherDecrypt;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::Sha256;

const VERSION: u8 = 0x80;

/// URL-safe base64 read as Python reads it: padding optional, and stray
/// bits in the last character allowed (a 43-character secret has two).
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const HEADER_LEN: usize = 1 + 8 + 16;
const MAC_LEN: usize = 32;
const BLOCK: usize = 16;

/// A Fernet key; its `Debug` shows nothing.
pub struct FernetKey(SecretBox<[u8; 32]>);

impl std::fmt::Debug for FernetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FernetKey(..)")
    }
}

impl FernetKey {
    /// The key from its URL-safe base64 text (with or without padding).
    pub fn from_base64(text: &str) -> Option<Self> {
        let text = text.trim();
        let raw = LENIENT.decode(text).ok()?;
        let key: [u8; 32] = raw.try_into().ok()?;
        Some(FernetKey(SecretBox::new(Box::new(key))))
    }

    /// The key from 32 raw bytes.
    pub fn from_bytes(key: [u8; 32]) -> Self {
        FernetKey(SecretBox::new(Box::new(key)))
    }

    /// The plaintext of `token`, or why it cannot be had (never the
    /// plaintext or the key in the reason).
    pub fn decrypt(&self, token: &str) -> Result<SecretString, &'static str> {
        let token = token.trim();
        let raw = LENIENT
            .decode(token)
            .map_err(|_| "not a Fernet token (bad base64)")?;
        if raw.len() < HEADER_LEN + BLOCK + MAC_LEN || raw[0] != VERSION {
            return Err("not a Fernet token");
        }
        let (signed, tag) = raw.split_at(raw.len() - MAC_LEN);
        let key = self.0.expose_secret();
        let (signing_key, encryption_key) = key.split_at(16);
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(signing_key)
            .map_err(|_| "bad signing key")?;
        mac.update(signed);
        mac.verify_slice(tag)
            .map_err(|_| "cannot be decrypted with this key (wrong key or tampered)")?;
        let iv = &signed[9..HEADER_LEN];
        let ciphertext = &signed[HEADER_LEN..];
        if ciphertext.len() % BLOCK != 0 {
            return Err("ciphertext is not whole blocks");
        }
        let cipher = aes::Aes128::new_from_slice(encryption_key).map_err(|_| "bad key")?;
        let mut plain = Vec::with_capacity(ciphertext.len());
        let mut previous: &[u8] = iv;
        for chunk in ciphertext.chunks_exact(BLOCK) {
            let mut block = aes::Block::default();
            block.copy_from_slice(chunk);
            cipher.decrypt_block(&mut block);
            plain.extend(block.iter().zip(previous).map(|(b, p)| b ^ p));
            previous = chunk;
        }
        // PKCS#7 padding.
        let pad = usize::from(*plain.last().ok_or("empty")?);
        if pad == 0
            || pad > BLOCK
            || plain[plain.len() - pad..]
                .iter()
                .any(|&b| usize::from(b) != pad)
        {
            return Err("bad padding");
        }
        plain.truncate(plain.len() - pad);
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| "not UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // From Python: Fernet(KEY).encrypt(b"hello fernet").
    const KEY: &str = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSiP6uKeI4=";
    const TOKEN: &str = "gAAAAABrEZ8RTVaGcxnEsgnPcDThH77WJKmCMpPavRGc9L1mPCZhpAXRQBlsEodnxxN9AruX6WdypORfbf7kTd_uO2bzVr_WNA==";

    #[test]
    fn decrypts_what_python_encrypted() {
        let key = FernetKey::from_base64(KEY).unwrap();
        assert_eq!(key.decrypt(TOKEN).unwrap().expose_secret(), "hello fernet");
    }

    #[test]
    fn refuses_a_wrong_key_and_tampering() {
        let key = FernetKey::from_base64(KEY).unwrap();
        let other = FernetKey::from_bytes([7; 32]);
        assert!(other.decrypt(TOKEN).is_err());
        let mut tampered = TOKEN.to_string();
        tampered.replace_range(40..41, if &TOKEN[40..41] == "A" { "B" } else { "A" });
        assert!(key.decrypt(&tampered).is_err());
        assert!(key.decrypt("not a token").is_err());
        assert!(FernetKey::from_base64("short").is_none());
    }
}
