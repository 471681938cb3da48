//! argon2id password hashing, and verification of the bcrypt hashes of
//! accounts imported from Langflow (re-hashed with argon2id at their first
//! successful sign-in, see [`QueuePlace::verify_and_upgrade`]).
//!
//! Parameters are one of OWASP's equivalent argon2id settings: 7 MiB of
//! memory, 5 passes, 1 lane (rather than the crate default of 19 MiB, 2
//! passes): the same cost to an attacker, a smaller peak for a service meant
//! to idle under 30 MB. Verification reads the parameters from the stored
//! hash, so older hashes keep working.
//!
//! All hashing runs on one dedicated thread, so a flood of sign-in attempts
//! takes at most one core and one argon2 buffer, whatever the number of
//! blocking threads. Requests reach it through a [`HashQueue`], which
//! bounds how many may wait.

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

/// The hashing thread's queue, started on first use; `None` if the thread
/// could not start.
fn hashing_thread() -> Result<&'static mpsc::Sender<Job>, AppError> {
    static QUEUE: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    QUEUE
        .get_or_init(|| {
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
        })
        .as_ref()
        .ok_or_else(|| AppError::internal("the password hashing thread could not start"))
}

fn stopped() -> AppError {
    AppError::internal("the password hashing thread stopped")
}

/// Runs `work` on the hashing thread and waits for its result (for the
/// command line and start-up, which have no queue to wait in).
fn on_hashing_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AppError> {
    let (reply, answer) = mpsc::sync_channel(1);
    hashing_thread()?
        .send(Box::new(move || {
            let _ = reply.send(work());
        }))
        .map_err(|_| stopped())?;
    answer.recv().map_err(|_| stopped())
}

pub const HASHING_BUSY: &str = "Too many password checks are waiting; try again in a moment";

/// The bounded, fair line in front of the hashing thread for requests:
/// one hash runs at a time (the thread), at most `waiting` more wait in
/// arrival order, and past that a request is refused at once (503 with
/// `Retry-After: 1`) instead of making everyone behind it wait longer.
/// A flood of sign-ins thus costs real users a quick 503, not seconds.
/// Waiting holds no worker thread and no database connection.
pub struct HashQueue {
    slots: tokio::sync::Semaphore,
}

/// A place in the [`HashQueue`]: held while the password work waits and
/// runs, released when dropped.
pub struct QueuePlace<'a> {
    _slot: tokio::sync::SemaphorePermit<'a>,
}

impl HashQueue {
    /// `waiting`: how many may wait behind the one being hashed.
    pub fn new(waiting: usize) -> Self {
        HashQueue {
            slots: tokio::sync::Semaphore::new(waiting.saturating_add(1)),
        }
    }

    /// A place in line, or the 503 for a full queue, without waiting.
    pub fn enter(&self) -> Result<QueuePlace<'_>, AppError> {
        self.slots
            .try_acquire()
            .map(|slot| QueuePlace { _slot: slot })
            .map_err(|_| AppError::unavailable(HASHING_BUSY).retry_after(1))
    }

    /// [`hash`] in line: a place is taken first (or refused at once).
    pub async fn hash(&self, password: String) -> Result<String, AppError> {
        self.enter()?.hash(password).await
    }
}

impl QueuePlace<'_> {
    /// Runs `work` on the hashing thread, waiting in arrival order.
    async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AppError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        hashing_thread()?
            .send(Box::new(move || {
                let _ = reply.send(work());
            }))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())
    }

    pub async fn hash(self, password: String) -> Result<String, AppError> {
        self.run(move || hash_now(&password)).await?
    }

    /// Checks `password` against `stored`, or against [`dummy_hash`] when
    /// there is no stored hash (an unknown user), so both cost the same.
    pub async fn verify(self, password: String, stored: Option<String>) -> Result<bool, AppError> {
        self.run(move || verify_now(&password, stored.as_deref().unwrap_or(dummy_hash())))
            .await
    }

    /// [`QueuePlace::verify`], and for a right password whose stored hash
    /// is not argon2id (a bcrypt hash imported from Langflow) the argon2id
    /// hash to store instead, computed in the same job.
    pub async fn verify_and_upgrade(
        self,
        password: String,
        stored: Option<String>,
    ) -> Result<Verified, AppError> {
        self.run(move || {
            let stored = stored.as_deref().unwrap_or(dummy_hash());
            if !verify_now(&password, stored) {
                return Ok(Verified::Wrong);
            }
            if !is_legacy(stored) {
                return Ok(Verified::Right);
            }
            hash_now(&password).map(Verified::RightUpgraded)
        })
        .await?
    }
}

/// The outcome of [`QueuePlace::verify_and_upgrade`].
#[derive(Debug)]
pub enum Verified {
    Wrong,
    Right,
    /// Right, and the stored hash should be replaced by this argon2id one.
    RightUpgraded(String),
}

/// The prefixes of bcrypt's modular-crypt hashes (`$2b$` is what Langflow
/// writes; `$2a$` and `$2y$` are older spellings of the same).
const BCRYPT_PREFIXES: [&str; 3] = ["$2a$", "$2b$", "$2y$"];

/// True for a stored hash keygate accepts but does not write (bcrypt).
pub fn is_legacy(stored: &str) -> bool {
    BCRYPT_PREFIXES.iter().any(|p| stored.starts_with(p))
}

/// Hashes on the calling thread (which must be the hashing thread or one
/// that may block).
fn hash_now(password: &str) -> Result<String, AppError> {
    hasher()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AppError::internal(format_args!("password hashing failed: {e}")))
}

fn verify_now(password: &str, stored: &str) -> bool {
    if is_legacy(stored) {
        // bcrypt reads at most 72 bytes, as Langflow's did when it hashed.
        return bcrypt::verify(password.as_bytes(), stored).unwrap_or(false);
    }
    match PasswordHash::new(stored) {
        Ok(parsed) => hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Hashes on the hashing thread, waiting for it (start-up and command line).
pub fn hash(password: &str) -> Result<String, AppError> {
    let password = password.to_string();
    on_hashing_thread(move || hash_now(&password))?
}

/// Verifies `password` against a stored PHC string on the hashing thread.
pub fn verify(password: &str, stored: &str) -> bool {
    let (password, stored) = (password.to_string(), stored.to_string());
    on_hashing_thread(move || verify_now(&password, &stored)).unwrap_or(false)
}

/// A fixed hash of a random string, verified against when a username does
/// not exist so sign-in time does not reveal which usernames exist.
/// Computed where it is first needed (on the hashing thread).
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_now("keygate-dummy-password-for-timing").unwrap_or_default())
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

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let queue = HashQueue::new(1);
        let running = queue.enter().unwrap();
        let waiting = queue.enter().unwrap();
        let refused = queue.enter().err().unwrap();
        assert_eq!(refused.status().as_u16(), 503);
        assert_eq!(refused.detail(), HASHING_BUSY);
        let response = actix_web::ResponseError::error_response(&refused);
        assert_eq!(response.headers().get("retry-after").unwrap(), "1");
        assert!(queue.hash("another password".into()).await.is_err());
        // A place frees as soon as its work is done.
        drop(running);
        let hashed = waiting.hash("correct horse".into()).await.unwrap();
        assert!(queue
            .enter()
            .unwrap()
            .verify("correct horse".into(), Some(hashed))
            .await
            .unwrap());
        assert!(!queue
            .enter()
            .unwrap()
            .verify("correct horse".into(), None)
            .await
            .unwrap());
    }

    #[test]
    fn bcrypt_hashes_verify_and_are_upgraded() {
        // Made with Python's bcrypt (cost 4), as Langflow hashes passwords.
        let stored = "$2b$04$n7vnAUODCYkrUSaqLY7LLeI9cfG1xlNOKCY9scKDa2bcBFWVbQsk.";
        assert!(is_legacy(stored));
        assert!(verify("langflow-password", stored));
        assert!(!verify("another password", stored));
        assert!(!is_legacy(&hash("x").unwrap()));
    }

    #[tokio::test]
    async fn a_right_bcrypt_password_comes_back_with_an_argon2id_hash() {
        let queue = HashQueue::new(2);
        let stored = "$2b$04$n7vnAUODCYkrUSaqLY7LLeI9cfG1xlNOKCY9scKDa2bcBFWVbQsk.".to_string();
        let place = queue.enter().unwrap();
        let Verified::RightUpgraded(new) = place
            .verify_and_upgrade("langflow-password".into(), Some(stored.clone()))
            .await
            .unwrap()
        else {
            panic!("expected an upgrade");
        };
        assert!(new.starts_with("$argon2id$"), "{new}");
        assert!(verify("langflow-password", &new));
        let place = queue.enter().unwrap();
        assert!(matches!(
            place
                .verify_and_upgrade("wrong".into(), Some(stored))
                .await
                .unwrap(),
            Verified::Wrong
        ));
        let place = queue.enter().unwrap();
        assert!(matches!(
            place
                .verify_and_upgrade("langflow-password".into(), Some(new))
                .await
                .unwrap(),
            Verified::Right
        ));
    }

    #[test]
    fn generated_passwords_are_long() {
        let p = generate().unwrap();
        assert_eq!(p.len(), 24);
        assert!(check_strength(&p).is_ok());
        assert!(check_strength("short").is_err());
    }
}
