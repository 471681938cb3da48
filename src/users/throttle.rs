//! Sign-in throttling: failed sign-ins are counted per username and per
//! client address, and past a limit each further attempt must wait a
//! back-off that doubles with every failure (at most the window).
//!
//! An attempt is counted *before* its password is checked and uncounted
//! when it succeeds (or never got to a check), so a burst of concurrent
//! guesses cannot all slip in before the first failure is recorded. A
//! refused attempt never reaches the database or the hashing thread.
//!
//! The counters live in memory, bounded by [`CAPACITY`] subjects; each
//! instance counts on its own (several instances behind one balancer each
//! allow the limit). An IPv6 client counts by its /64, the block one
//! customer usually gets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::LoginLimits;
use crate::error::AppError;

/// Usernames and addresses remembered at once; past it the stalest go.
pub const CAPACITY: usize = 50_000;
/// Usernames are at most 64 characters (`users::MAX_USERNAME_LEN`), so
/// longer texts, which match no user, are told apart only this far: a
/// megabyte of username costs no more memory than a real one.
const KEY_CHARS: usize = 65;

pub const TOO_MANY_FAILURES: &str = "Too many failed sign-in attempts; try again later";

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Subject {
    User(String),
    Address(IpAddr),
}

#[derive(Debug)]
struct Record {
    failures: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

impl Record {
    /// When this record is forgotten: `window` after its last failure or
    /// the end of its back-off, whichever is later.
    fn forgotten_at(&self, window: Duration) -> Instant {
        self.blocked_until.unwrap_or(self.last).max(self.last) + window
    }
}

/// One sign-in attempt, already counted as a failure. Hand it back with
/// [`SigninThrottle::succeeded`] or [`SigninThrottle::not_checked`];
/// dropping it leaves it counted.
#[derive(Debug)]
#[must_use]
pub struct Attempt {
    user: Subject,
    address: Option<Subject>,
}

pub struct SigninThrottle {
    limits: LoginLimits,
    records: Mutex<HashMap<Subject, Record>>,
}

impl SigninThrottle {
    pub fn new(limits: LoginLimits) -> Self {
        SigninThrottle {
            limits,
            records: Mutex::new(HashMap::new()),
        }
    }

    fn records(&self) -> MutexGuard<'_, HashMap<Subject, Record>> {
        // A panic while holding the lock leaves counters, not invariants.
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts an attempt for `username` from `address`, or refuses it with
    /// 429 and `Retry-After` while either is backing off.
    pub fn begin(&self, username: &str, address: Option<IpAddr>) -> Result<Attempt, AppError> {
        self.begin_at(username, address, Instant::now())
    }

    fn begin_at(
        &self,
        username: &str,
        address: Option<IpAddr>,
        now: Instant,
    ) -> Result<Attempt, AppError> {
        let attempt = Attempt {
            user: Subject::User(username.chars().take(KEY_CHARS).collect()),
            address: address.map(|ip| Subject::Address(address_key(ip))),
        };
        let window = self.limits.window;
        let mut records = self.records();
        let subjects = std::iter::once(&attempt.user).chain(attempt.address.as_ref());
        let mut wait = Duration::ZERO;
        for subject in subjects.clone() {
            if let Some(record) = records.get(subject) {
                if record.forgotten_at(window) <= now {
                    records.remove(subject);
                } else if let Some(until) = record.blocked_until.filter(|&u| u > now) {
                    wait = wait.max(until - now);
                }
            }
        }
        if !wait.is_zero() {
            tracing::info!("sign-in refused: too many failed attempts");
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(AppError::new(
                actix_web::http::StatusCode::TOO_MANY_REQUESTS,
                TOO_MANY_FAILURES,
            )
            .retry_after(u32::try_from(seconds).unwrap_or(u32::MAX)));
        }
        for subject in subjects {
            if !records.contains_key(subject) && records.len() >= CAPACITY {
                make_room(&mut records, window, now);
            }
            let max = match subject {
                Subject::User(_) => self.limits.max_failures,
                Subject::Address(_) => self.limits.max_address_failures,
            };
            let record = records.entry(subject.clone()).or_insert(Record {
                failures: 0,
                last: now,
                blocked_until: None,
            });
            record.failures = record.failures.saturating_add(1);
            record.last = now;
            if record.failures >= max {
                record.blocked_until = Some(now + self.backoff(record.failures - max));
            }
        }
        Ok(attempt)
    }

    /// The wait after the `extra`-th failure past the limit.
    fn backoff(&self, extra: u32) -> Duration {
        let factor = 1u32.checked_shl(extra.min(31)).unwrap_or(u32::MAX);
        self.limits
            .backoff
            .saturating_mul(factor)
            .min(self.limits.window)
    }

    /// The password was right: the username's failures are forgotten, and
    /// the address is not charged for this attempt (its earlier failures
    /// stay, so one good account does not launder guesses at others).
    pub fn succeeded(&self, attempt: Attempt) {
        let mut records = self.records();
        records.remove(&attempt.user);
        if let Some(address) = &attempt.address {
            uncount(&mut records, address, self.limits.max_address_failures);
        }
    }

    /// The attempt never reached a password check (the hashing queue was
    /// full, the database failed): it is not charged to anyone.
    pub fn not_checked(&self, attempt: Attempt) {
        let mut records = self.records();
        uncount(&mut records, &attempt.user, self.limits.max_failures);
        if let Some(address) = &attempt.address {
            uncount(&mut records, address, self.limits.max_address_failures);
        }
    }
}

fn uncount(records: &mut HashMap<Subject, Record>, subject: &Subject, max: u32) {
    if let Some(record) = records.get_mut(subject) {
        record.failures = record.failures.saturating_sub(1);
        if record.failures < max {
            record.blocked_until = None;
        }
        if record.failures == 0 {
            records.remove(subject);
        }
    }
}

/// Drops forgotten records, and if that frees nothing the stalest one.
fn make_room(records: &mut HashMap<Subject, Record>, window: Duration, now: Instant) {
    records.retain(|_, record| record.forgotten_at(window) > now);
    if records.len() >= CAPACITY {
        if let Some(stalest) = records
            .iter()
            .min_by_key(|(_, record)| record.forgotten_at(window))
            .map(|(subject, _)| subject.clone())
        {
            records.remove(&stalest);
        }
    }
}

/// IPv4 (also when mapped into IPv6) as it is; IPv6 by its /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LoginLimits {
        LoginLimits {
            max_failures: 3,
            max_address_failures: 5,
            window: Duration::from_secs(900),
            backoff: Duration::from_secs(30),
        }
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    fn retry_after(error: AppError) -> String {
        assert_eq!(error.status().as_u16(), 429);
        assert_eq!(error.detail(), TOO_MANY_FAILURES);
        let response = actix_web::ResponseError::error_response(&error);
        response
            .headers()
            .get("retry-after")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    }

    /// `n` attempts, each let through and never reported back (a failure).
    fn fail(
        throttle: &SigninThrottle,
        at: Instant,
        n: usize,
        who: impl Fn(usize) -> (String, String),
    ) {
        for i in 0..n {
            let (username, address) = who(i);
            let _ = throttle.begin_at(&username, ip(&address), at).unwrap();
        }
    }

    #[test]
    fn backs_off_exponentially_per_username() {
        let throttle = SigninThrottle::new(limits());
        let t0 = Instant::now();
        fail(&throttle, t0, 3, |i| ("ann".into(), format!("10.0.0.{i}")));
        let refused = throttle.begin_at("ann", ip("10.0.1.1"), t0).unwrap_err();
        assert_eq!(retry_after(refused), "30");
        // Another username from the same addresses is not affected.
        let _ = throttle.begin_at("bob", ip("10.0.0.1"), t0).unwrap();
        // After the back-off, one more guess, then twice the wait.
        let t1 = t0 + Duration::from_secs(30);
        let _ = throttle.begin_at("ann", ip("10.0.2.1"), t1).unwrap();
        let refused = throttle.begin_at("ann", ip("10.0.2.1"), t1).unwrap_err();
        assert_eq!(retry_after(refused), "60");
        // Quiet for the window after the back-off ends: forgotten.
        let t2 = t1 + Duration::from_secs(60 + 900);
        for _ in 0..3 {
            let _ = throttle.begin_at("ann", None, t2).unwrap();
        }
        assert!(throttle.begin_at("ann", None, t2).is_err());
    }

    #[test]
    fn backoff_is_capped_at_the_window() {
        let throttle = SigninThrottle::new(limits());
        assert_eq!(throttle.backoff(0), Duration::from_secs(30));
        assert_eq!(throttle.backoff(2), Duration::from_secs(120));
        assert_eq!(throttle.backoff(40), Duration::from_secs(900));
    }

    #[test]
    fn success_resets_the_username_but_not_the_address() {
        let throttle = SigninThrottle::new(limits());
        let now = Instant::now();
        fail(&throttle, now, 2, |_| ("ann".into(), "10.0.0.1".into()));
        let good = throttle.begin_at("ann", ip("10.0.0.1"), now).unwrap();
        throttle.succeeded(good);
        fail(&throttle, now, 2, |_| ("ann".into(), "10.0.0.1".into()));
        // The address has 4 failures now (the success was not charged);
        // the fifth reaches its limit, the sixth waits.
        let _ = throttle.begin_at("cid", ip("10.0.0.1"), now).unwrap();
        let refused = throttle.begin_at("dan", ip("10.0.0.1"), now).unwrap_err();
        assert_eq!(retry_after(refused), "30");
    }

    #[test]
    fn unchecked_attempts_are_not_charged() {
        let throttle = SigninThrottle::new(limits());
        let now = Instant::now();
        for _ in 0..10 {
            let attempt = throttle.begin_at("ann", ip("10.0.0.1"), now).unwrap();
            throttle.not_checked(attempt);
        }
        assert!(throttle.records().is_empty());
    }

    #[test]
    fn ipv6_counts_by_its_64_block() {
        let throttle = SigninThrottle::new(limits());
        let now = Instant::now();
        fail(&throttle, now, 5, |i| {
            (format!("u{i}"), format!("2001:db8::{i}"))
        });
        let refused = throttle
            .begin_at("u9", ip("2001:db8::ffff:1"), now)
            .unwrap_err();
        assert_eq!(retry_after(refused), "30");
        assert_eq!(
            address_key("::ffff:10.1.2.3".parse().unwrap()),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn stays_bounded() {
        let throttle = SigninThrottle::new(limits());
        let now = Instant::now();
        for i in 0..CAPACITY + 10 {
            let _ = throttle.begin_at(&format!("user{i}"), None, now).unwrap();
        }
        assert_eq!(throttle.records().len(), CAPACITY);
    }
}
