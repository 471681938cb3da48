//! Random text from the operating system: the one place keys, session
//! tokens, generated passwords and generated secrets draw from.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::rngs::{SysError, SysRng};
use rand::TryRng;

/// `N` bytes from the OS random source, as URL-safe base64 without padding
/// (`4 * N / 3` characters, rounded up).
pub fn url_safe<const N: usize>() -> Result<String, SysError> {
    let mut bytes = [0u8; N];
    SysRng.try_fill_bytes(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    #[test]
    fn lengths_and_alphabet() {
        let text = super::url_safe::<32>().unwrap();
        assert_eq!(text.len(), 43);
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(super::url_safe::<18>().unwrap().len(), 24);
        assert_ne!(super::url_safe::<32>().unwrap(), text);
    }
}
