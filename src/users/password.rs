//! argon2id password hashing.
//!
//! Parameters are one of OWASP's equivalent argon2id settings: 7 MiB of
//! memory, 5 passes, 1 lane (rather than the crate default of 19 MiB, 2
//! passes): the same cost to an attacker, a smaller peak for a service meant
//! to idle under 30 MB. Verification reads the parameters from the stored
//! hash, so older hashes keep working.
//!
//! All hashing runs on one dedicated thread, so a flood of sign-in attempts
//! takes at most one core and one argon2 buffer, whatever the number of
//! blocking threads.

use std::sync::mpsc;
use std::sync::OnceLock;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

const MEMORY_KIB: u32 = 7 * 1024;
const PASSES: u32 = 5;

fn hasher() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, PASSES, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

use crate::error::AppError;

pub const MIN_PASSWORD_LEN: usize = 8;
pub const MAX_PASSWORD_LEN: usize = 1024;

type Job = Box<dyn FnOnce() + Send>;

/// Runs `work` on the hashing thread and waits for its result.
fn on_hashing_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AppError> {
    static QUEUE: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("keygate-argon2".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .ok()
            .map(|_| tx)
    });
    let queue = queue
        .as_ref()
        .ok_or_else(|| AppError::internal("the password hashing thread could not start"))?;
    let (reply, answer) = mpsc::sync_channel(1);
    queue
        .send(Box::new(move || {
            let _ = reply.send(work());
        }))
        .map_err(|_| AppError::internal("the password hashing thread stopped"))?;
    answer
        .recv()
        .map_err(|_| AppError::internal("the password hashing thread stopped"))
}

/// [`hash`] from async code, without holding a database connection while
/// the hashing thread is busy.
pub async fn hash_off_pool(password: String) -> Result<String, AppError> {
    actix_web::web::block(move || hash(&password))
        .await
        .map_err(|_| AppError::internal("password hashing was cancelled"))?
}

pub fn hash(password: &str) -> Result<String, AppError> {
    let password = password.to_string();
    on_hashing_thread(move || {
        hasher()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| AppError::internal(format_args!("password hashing failed: {e}")))
    })?
}

/// Verifies `password` against a stored PHC string. Unknown users are
/// checked against [`dummy_hash`] so both failures cost the same.
pub fn verify(password: &str, stored: &str) -> bool {
    let (password, stored) = (password.to_string(), stored.to_string());
    on_hashing_thread(move || match PasswordHash::new(&stored) {
        Ok(parsed) => hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    })
    .unwrap_or(false)
}

/// A fixed hash of a random string, verified against when a username does
/// not exist so sign-in time does not reveal which usernames exist.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash("keygate-dummy-password-for-timing").unwrap_or_default())
}

/// Checks a new password's length; returns a 422 naming the rule.
pub fn check_strength(password: &str) -> Result<(), AppError> {
    let len = password.chars().count();
    if len < MIN_PASSWORD_LEN {
        return Err(AppError::unprocessable(format!(
            "password must be at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    if len > MAX_PASSWORD_LEN {
        return Err(AppError::unprocessable(format!(
            "password must be at most {MAX_PASSWORD_LEN} characters"
        )));
    }
    Ok(())
}

/// A strong random password for the bootstrap superuser.
pub fn generate() -> Result<String, AppError> {
    crate::random::url_safe::<18>()
        .map_err(|e| AppError::internal(format_args!("OS random source failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ() {
        let a = hash("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{a}");
        assert!(verify("correct horse", &a));
        assert!(!verify("wrong horse", &a));
        assert_ne!(a, hash("correct horse").unwrap());
        assert!(!verify("x", "not a hash"));
        assert!(!verify("x", dummy_hash()));
    }

    #[test]
    fn generated_passwords_are_long() {
        let p = generate().unwrap();
        assert_eq!(p.len(), 24);
        assert!(check_strength(&p).is_ok());
        assert!(check_strength("short").is_err());
    }
}
