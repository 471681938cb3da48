//! How an `sk-` key is shown once it has been handed out: its display
//! prefix and the masked form Langflow lists keys in. The key itself is a
//! [`crate::token::PlainKey`].

pub use crate::token::PlainKey;

/// Characters kept in clear to tell keys apart (`sk-AbCdE`).
pub const DISPLAY_PREFIX_LEN: usize = 8;

pub fn display_prefix(key: &PlainKey) -> String {
    key.prefix(DISPLAY_PREFIX_LEN)
}

/// The masked form Langflow shows in key lists: the first 8 characters,
/// then `*` up to the full length of a key.
pub fn mask(display_prefix: &str) -> String {
    let shown: String = display_prefix.chars().take(DISPLAY_PREFIX_LEN).collect();
    let hidden = PlainKey::LEN.saturating_sub(shown.chars().count());
    format!("{shown}{}", "*".repeat(hidden))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_like_langflow() {
        let masked = mask("sk-rZK4y");
        assert_eq!(masked.len(), 46);
        assert_eq!(masked, format!("sk-rZK4y{}", "*".repeat(38)));
        let key = PlainKey::generate().unwrap();
        assert_eq!(display_prefix(&key), key.expose()[..8]);
    }
}
