//! Failed-key throttling per client address
//! (`KEYGATE_KEY_FAILURES_PER_MINUTE`).
//!
//! An address that has sent that many invalid keys in the current minute
//! gets 429 for further invalid ones, while its valid keys are still
//! served: the throttle decides only what an invalid key costs and what it
//! is told. A throttled address's keys are answered from the verification
//! caches; a key the caches do not know reaches the database only a few
//! times a minute ([`THROTTLED_LOOKUPS_PER_MINUTE`]), so a new valid key
//! gets through soon while a flood of made-up keys costs no queries.
//!
//! A window is the minute from an address's first counted failure. The counters live in a bounded cache
//! ([`TRACKED_ADDRESSES`]); IPv6 addresses count per /64, the block one
//! host usually holds, so rotating addresses inside it does not help.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use quick_cache::sync::Cache;

use crate::client_ip::{client_ip, Cidr};

/// Addresses whose counts are kept; beyond it the least used are dropped
/// (and start again from zero).
const TRACKED_ADDRESSES: usize = 65_536;

/// Database lookups a throttled address gets per minute for keys the
/// caches do not know.
pub const THROTTLED_LOOKUPS_PER_MINUTE: u32 = 10;

pub const TOO_MANY_INVALID_KEYS: &str = "Too many invalid API keys from this address; retry later";

pub struct KeyFailures {
    limit: u32,
    trusted_proxies: Vec<Cidr>,
    windows: Cache<IpAddr, Arc<Window>>,
    started: Instant,
}

/// One address's counts in its current minute.
#[derive(Default)]
struct Window {
    /// Seconds since [`KeyFailures::started`] at which the window began.
    began: AtomicU64,
    failures: AtomicU32,
    lookups: AtomicU32,
}

impl KeyFailures {
    /// `limit` invalid keys per minute and address; 0: no limit.
    pub fn new(limit: u32, trusted_proxies: Vec<Cidr>) -> Self {
        KeyFailures {
            limit,
            trusted_proxies,
            windows: Cache::new(TRACKED_ADDRESSES),
            started: Instant::now(),
        }
    }

    /// The client's full address (after the trusted proxies).
    pub fn address(&self, req: &actix_web::HttpRequest) -> IpAddr {
        client_ip(req, &self.trusted_proxies)
    }

    /// The address the counts are kept under.
    pub fn client(&self, req: &actix_web::HttpRequest) -> IpAddr {
        Self::client_of(self.address(req))
    }

    /// The address the counts of the client at `address` are kept under:
    /// IPv6 addresses count per /64.
    pub fn client_of(address: IpAddr) -> IpAddr {
        match address {
            IpAddr::V6(ip) => {
                let [a, b, c, d, ..] = ip.segments();
                IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
            }
            v4 => v4,
        }
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// The window of `client`, begun again if a minute has passed.
    fn window(&self, client: IpAddr, create: bool) -> Option<Arc<Window>> {
        let now = self.now();
        let window = match self.windows.get(&client) {
            Some(window) => window,
            None if create => {
                let window = Arc::new(Window::default());
                window.began.store(now, Ordering::Relaxed);
                self.windows.insert(client, window.clone());
                window
            }
            None => return None,
        };
        let began = window.began.load(Ordering::Relaxed);
        if now.saturating_sub(began) >= 60
            && window
                .began
                .compare_exchange(began, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            window.failures.store(0, Ordering::Relaxed);
            window.lookups.store(0, Ordering::Relaxed);
        }
        Some(window)
    }

    /// Seconds until the address may try again, when it is throttled.
    pub fn throttled(&self, client: IpAddr) -> Option<u32> {
        if self.limit == 0 {
            return None;
        }
        let window = self.window(client, false)?;
        (window.failures.load(Ordering::Relaxed) >= self.limit).then(|| {
            let age = self
                .now()
                .saturating_sub(window.began.load(Ordering::Relaxed));
            60u64.saturating_sub(age).max(1) as u32
        })
    }

    /// Counts an invalid key from `client`.
    pub fn record_failure(&self, client: IpAddr) {
        if self.limit == 0 {
            return;
        }
        if let Some(window) = self.window(client, true) {
            window.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether a throttled address may still have one key looked up in the
    /// database this minute (and uses that lookup up).
    pub fn take_lookup(&self, client: IpAddr) -> bool {
        self.window(client, true).is_some_and(|window| {
            window.lookups.fetch_add(1, Ordering::Relaxed) < THROTTLED_LOOKUPS_PER_MINUTE
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_after_the_limit_and_counts_ipv6_per_64() {
        let failures = KeyFailures::new(3, Vec::new());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(failures.throttled(a), None);
            failures.record_failure(a);
        }
        let retry = failures.throttled(a).expect("throttled after 3");
        assert!((1..=60).contains(&retry));
        assert_eq!(failures.throttled(b), None, "another address is not");
        let lookups = (0..20).filter(|_| failures.take_lookup(a)).count();
        assert_eq!(lookups, THROTTLED_LOOKUPS_PER_MINUTE as usize);

        let req = actix_web::test::TestRequest::default()
            .peer_addr("[2001:db8:1:2:3:4:5:6]:1".parse().unwrap())
            .to_http_request();
        assert_eq!(
            failures.client(&req),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn zero_means_no_limit() {
        let failures = KeyFailures::new(0, Vec::new());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..1000 {
            failures.record_failure(a);
        }
        assert_eq!(failures.throttled(a), None);
    }
}
