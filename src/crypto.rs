//! Encryption at rest for every stored secret (provider credentials,
//! Credential variables, anything a later domain must keep in the clear
//! only in memory).
//!
//! # API (stable; other domains build on it)
//! - [`SecretBox::new`]`(operator_secret)` derives an AES-256-GCM key with
//!   HKDF-SHA256 from the operator secret (`KEYGATE_SECRET_KEY`, or the
//!   generated `{data_dir}/secret.key`).
//! - [`SecretBox::encrypt`]`(&str) -> Result<String, AppError>` gives a
//!   self-describing text, `v1:` + base64url(nonce ‖ ciphertext ‖ tag), with a
//!   fresh random 96-bit nonce per value. Store that text in a TEXT column.
//! - [`SecretBox::decrypt`]`(&str) -> Result<String, AppError>` reverses it; a
//!   value written under another secret, or tampered with, is an error (500
//!   with a generic detail, cause logged), never garbage.
//! - [`open`] is what start-up calls: it finds the operator secret, checks it
//!   against the canary stored in the `settings` table (so a wrong or missing
//!   secret for existing data stops the start with a clear message), and
//!   stores the canary on first start.
//! - The app's box is `state.secrets` (an `Arc<SecretBox>`).
//!
//! A table that stores values encrypted with this box must also be
//! re-encrypted by `keygate rotate-secret` (see `cli.rs`).
//!
//! Neither the operator secret nor the derived key is ever in `Debug` output
//! or a log line.

use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, Generate, KeyInit};
use aes_gcm::{Aes256Gcm, Key};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use diesel::prelude::*;
use hkdf::Hkdf;
use sha2::Sha256;

use crate::config::Config;
use crate::db::schema::settings;
use crate::db::{self, DbConnection};
use crate::error::AppError;

/// Prefix of every encrypted value; names the format version.
pub const FORMAT_PREFIX: &str = "v1:";
/// The file the generated operator secret is kept in, inside the data dir.
pub const SECRET_FILE: &str = "secret.key";
/// Shortest accepted operator secret, in characters.
pub const MIN_SECRET_LEN: usize = 16;
/// `settings` key of the canary: a known text encrypted with the box.
pub const CANARY_SETTING: &str = "secret_canary";

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HKDF_SALT: &[u8] = b"keygate/secret-box/v1";
const HKDF_INFO: &[u8] = b"keygate stored secrets, AES-256-GCM";
const CANARY_TEXT: &str = "keygate secret canary v1";

/// Encrypts and decrypts stored secrets under a key derived from the
/// operator secret. Its `Debug` (the cipher's) shows no key material.
#[derive(Clone, Debug)]
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl SecretBox {
    /// Derives the key. An empty secret is refused; one shorter than
    /// [`MIN_SECRET_LEN`] characters is accepted with a warning (the
    /// operator's choice; the generated secret is far longer). Messages
    /// never contain the secret.
    pub fn new(operator_secret: &str) -> Result<Self, String> {
        let secret = operator_secret.trim();
        if secret.is_empty() {
            return Err("the secret key is empty".to_string());
        }
        if secret.chars().count() < MIN_SECRET_LEN {
            tracing::warn!(
                "the secret key has fewer than {MIN_SECRET_LEN} characters; use a long random one"
            );
        }
        let hkdf = Hkdf::<Sha256>::new(Some(HKDF_SALT), secret.as_bytes());
        let mut okm = [0u8; 32];
        hkdf.expand(HKDF_INFO, &mut okm)
            .map_err(|_| "HKDF cannot produce a 32-byte key".to_string())?;
        let key = Key::<Aes256Gcm>::from(okm);
        Ok(SecretBox {
            cipher: Aes256Gcm::new(&key),
        })
    }

    /// Encrypts `plaintext` with a fresh random nonce.
    pub fn encrypt(&self, plaintext: &str) -> Result<String, AppError> {
        let nonce = aes_gcm::Nonce::try_generate()
            .map_err(|e| AppError::internal(format_args!("OS random source failed: {e}")))?;
        let sealed = self
            .cipher
            .encrypt(&nonce, plaintext.as_bytes())
            .map_err(|_| AppError::internal("encryption failed"))?;
        let mut raw = Vec::with_capacity(NONCE_LEN + sealed.len());
        raw.extend_from_slice(nonce.as_slice());
        raw.extend_from_slice(&sealed);
        Ok(format!("{FORMAT_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw)))
    }

    /// Decrypts a value produced by [`SecretBox::encrypt`] with the same
    /// operator secret.
    pub fn decrypt(&self, stored: &str) -> Result<String, AppError> {
        self.try_decrypt(stored)
            .map_err(|cause| AppError::internal(format_args!("stored secret: {cause}")))
    }

    /// Like `decrypt`, with the reason as text and nothing logged.
    fn try_decrypt(&self, stored: &str) -> Result<String, &'static str> {
        let body = stored
            .strip_prefix(FORMAT_PREFIX)
            .ok_or("unknown encryption format")?;
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| "not valid base64")?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err("too short");
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = aes_gcm::Nonce::try_from(nonce).map_err(|_| "bad nonce")?;
        let plain = self
            .cipher
            .decrypt(&nonce, sealed)
            .map_err(|_| "cannot be decrypted with this secret key (wrong key or tampered)")?;
        String::from_utf8(plain).map_err(|_| "not UTF-8")
    }

    /// True when `stored` decrypts under this box.
    pub fn can_decrypt(&self, stored: &str) -> bool {
        self.try_decrypt(stored).is_ok()
    }
}

/// Where the operator secret came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `KEYGATE_SECRET_KEY`.
    Environment,
    /// The generated file (created now or on an earlier start).
    File(PathBuf),
}

/// The path of the generated secret file for this configuration.
pub fn secret_file(config: &Config) -> PathBuf {
    config.data_dir.join(SECRET_FILE)
}

/// Start-up: finds the operator secret, checks it against the stored
/// canary (storing one on first start) and returns the box. Every failure
/// is a message for the operator naming `KEYGATE_SECRET_KEY`.
pub fn open(config: &Config, conn: &mut DbConnection) -> Result<(SecretBox, SecretSource), String> {
    let canary = read_canary(conn)?;
    let (secret, source) = match &config.secret_key {
        Some(secret) => (
            secrecy::ExposeSecret::expose_secret(secret).to_string(),
            SecretSource::Environment,
        ),
        None => {
            let path = secret_file(config);
            let secret = if path.exists() {
                read_secret_file(&path)?
            } else if canary.is_some() {
                return Err(format!(
                    "the database holds encrypted secrets but no secret key was found: \
                     set KEYGATE_SECRET_KEY to the secret they were encrypted with, or \
                     restore {}",
                    path.display()
                ));
            } else {
                create_secret_file(&path)?
            };
            (secret, SecretSource::File(path))
        }
    };
    let secret_box = SecretBox::new(&secret).map_err(|e| match &source {
        SecretSource::Environment => format!("KEYGATE_SECRET_KEY: {e}"),
        SecretSource::File(path) => format!("{}: {e}", path.display()),
    })?;
    match canary {
        Some(stored) => check_canary(&secret_box, &stored, &source)?,
        None => store_canary(conn, &secret_box, &source)?,
    }
    Ok((secret_box, source))
}

fn wrong_secret(source: &SecretSource) -> String {
    let from = match source {
        SecretSource::Environment => "KEYGATE_SECRET_KEY".to_string(),
        SecretSource::File(path) => {
            format!("{} (KEYGATE_SECRET_KEY is not set)", path.display())
        }
    };
    format!(
        "the secret key from {from} does not match the one the stored secrets were \
         encrypted with; start keygate with the original KEYGATE_SECRET_KEY (every \
         instance must use the same one), or rotate with `keygate rotate-secret`"
    )
}

fn check_canary(secret_box: &SecretBox, stored: &str, source: &SecretSource) -> Result<(), String> {
    match secret_box.try_decrypt(stored) {
        Ok(text) if text == CANARY_TEXT => Ok(()),
        _ => Err(wrong_secret(source)),
    }
}

/// Readiness: whether the stored canary opens with this instance's secret
/// box (false when there is none or it does not match).
pub fn canary_matches(conn: &mut DbConnection, secret_box: &SecretBox) -> Result<bool, String> {
    Ok(read_canary(conn)?
        .and_then(|stored| secret_box.try_decrypt(&stored).ok())
        .is_some_and(|text| text == CANARY_TEXT))
}

fn read_canary(conn: &mut DbConnection) -> Result<Option<String>, String> {
    settings::table
        .find(CANARY_SETTING)
        .select(settings::value)
        .first::<String>(conn)
        .optional()
        .map_err(|e| format!("cannot read the secret-key canary: {e}"))
}

/// Stores the canary; when another instance stored one first, checks ours
/// against it instead.
fn store_canary(
    conn: &mut DbConnection,
    secret_box: &SecretBox,
    source: &SecretSource,
) -> Result<(), String> {
    let value = canary_value(secret_box).map_err(|e| e.detail().to_string())?;
    let inserted = diesel::insert_into(settings::table)
        .values((
            settings::key.eq(CANARY_SETTING),
            settings::value.eq(&value),
            settings::updated_at.eq(db::now()),
        ))
        .execute(conn);
    match inserted {
        Ok(_) => Ok(()),
        Err(e) if matches!(db::DbError::classify(&e), db::DbError::Duplicate(_)) => {
            match read_canary(conn)? {
                Some(stored) => check_canary(secret_box, &stored, source),
                None => Err("the secret-key canary vanished during start-up".into()),
            }
        }
        Err(e) => Err(format!("cannot store the secret-key canary: {e}")),
    }
}

/// The canary text encrypted with `secret_box`.
pub fn canary_value(secret_box: &SecretBox) -> Result<String, AppError> {
    secret_box.encrypt(CANARY_TEXT)
}

/// Replaces the stored canary (used by rotation, inside its transaction).
pub fn replace_canary(conn: &mut DbConnection, new_box: &SecretBox) -> Result<(), AppError> {
    let value = canary_value(new_box)?;
    let updated = diesel::update(settings::table.find(CANARY_SETTING))
        .set((
            settings::value.eq(&value),
            settings::updated_at.eq(db::now()),
        ))
        .execute(conn)?;
    if updated == 0 {
        diesel::insert_into(settings::table)
            .values((
                settings::key.eq(CANARY_SETTING),
                settings::value.eq(&value),
                settings::updated_at.eq(db::now()),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Re-encrypts every value of an encrypted text column from the box `old`
/// to the box `new`, row by row through the table's `id`, and gives the
/// number of rows: the part of a rotation each table with secrets takes
/// (call it inside the rotation's transaction). `where FILTER` limits it to
/// the rows that hold a secret.
///
/// ```text
/// crypto::reencrypt_column!(conn, old, new, variables.value where variables::var_type.eq(CREDENTIAL))
/// ```
macro_rules! reencrypt_column {
    ($conn:expr, $old:expr, $new:expr, $table:ident . $column:ident $(where $filter:expr)?) => {{
        use diesel::prelude::*;
        let rows: Vec<(String, String)> = $table::table
            $(.filter($filter))?
            .select(($table::id, $table::$column))
            .load($conn)?;
        for (id, value) in &rows {
            let plain = $old.decrypt(value)?;
            diesel::update($table::table.find(id))
                .set($table::$column.eq($new.encrypt(&plain)?))
                .execute($conn)?;
        }
        Ok(rows.len())
    }};
}
pub(crate) use reencrypt_column;

/// A new operator secret: 32 bytes from the OS, base64url (43 characters).
pub fn generate_secret() -> Result<String, String> {
    crate::random::url_safe::<32>().map_err(|e| format!("OS random source failed: {e}"))
}

fn read_secret_file(path: &Path) -> Result<String, String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    "the secret key file is readable by other users; chmod 600 it"
                );
            }
        }
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the secret key file {}: {e}", path.display()))?;
    let secret = text.trim().to_string();
    if secret.is_empty() {
        return Err(format!(
            "the secret key file {} is empty; restore it or set KEYGATE_SECRET_KEY",
            path.display()
        ));
    }
    Ok(secret)
}

/// Creates the secret file (mode 0600). When another process created it
/// first, reads theirs.
fn create_secret_file(path: &Path) -> Result<String, String> {
    if let Some(dir) = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && !p.exists())
    {
        crate::db::create_private_dir(dir)
            .map_err(|e| format!("cannot create the data directory {}: {e}", dir.display()))?;
    }
    let secret = generate_secret()?;
    match write_new_private_file(path, &secret) {
        Ok(()) => {
            tracing::info!(
                path = %path.display(),
                "generated a secret key for stored credentials; back this file up"
            );
            Ok(secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_secret_file(path),
        Err(e) => Err(format!(
            "cannot create the secret key file {}: {e}",
            path.display()
        )),
    }
}

/// Writes `content` to a file that must not exist yet, readable and
/// writable by the owner only.
pub fn write_new_private_file(path: &Path, content: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(content.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// Replaces the secret file atomically (temporary 0600 file, then rename).
pub fn replace_secret_file(path: &Path, secret: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("key.new");
    let _ = std::fs::remove_file(&tmp);
    write_new_private_file(&tmp, secret)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_a_fresh_nonce_each_time() {
        let secret_box = SecretBox::new("an operator secret of some length").unwrap();
        let a = secret_box.encrypt("sk-lf-0123456789").unwrap();
        let b = secret_box.encrypt("sk-lf-0123456789").unwrap();
        assert!(a.starts_with(FORMAT_PREFIX));
        assert_ne!(a, b, "random nonce per value");
        assert!(!a.contains("0123456789"));
        assert_eq!(secret_box.decrypt(&a).unwrap(), "sk-lf-0123456789");
        assert_eq!(secret_box.decrypt(&b).unwrap(), "sk-lf-0123456789");
        assert_eq!(
            secret_box
                .decrypt(&secret_box.encrypt("").unwrap())
                .unwrap(),
            ""
        );
    }

    #[test]
    fn another_secret_or_tampering_fails_cleanly() {
        let one = SecretBox::new("first operator secret!!").unwrap();
        let two = SecretBox::new("second operator secret!").unwrap();
        let sealed = one.encrypt("value").unwrap();
        assert!(two.decrypt(&sealed).is_err());
        assert!(!two.can_decrypt(&sealed));
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(one.decrypt(&String::from_utf8(tampered).unwrap()).is_err());
        assert!(one.decrypt("plain text").is_err());
        assert!(one.decrypt("v1:AAAA").is_err());
    }

    #[test]
    fn short_secrets_are_refused_and_debug_hides_everything() {
        assert!(SecretBox::new("  ").is_err());
        assert!(SecretBox::new("short").is_ok());
        let secret_box = SecretBox::new("a-long-enough-secret").unwrap();
        let shown = format!("{secret_box:?}");
        assert!(shown.starts_with("SecretBox"), "{shown}");
        assert!(!shown.contains("a-long-enough-secret"));
        assert_eq!(generate_secret().unwrap().len(), 43);
    }
}
