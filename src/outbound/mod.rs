//! Every outbound HTTP call (provider validation, upstream forwarding) goes
//! through [`Outbound`]: one `reqwest::Client` built once, with a guard
//! against server-side request forgery.
//!
//! # API (stable; other domains build on it)
//! - `state.outbound` is an `Arc<Outbound>`.
//! - [`Outbound::check_url`] validates a URL someone gave us (provider host,
//!   flow upstream): `http`/`https` only, a host, no `user:pass@`, and a
//!   literal IP must be public. Refusals are **422** with a detail naming
//!   the URL's host (never its query or credentials).
//! - [`Outbound::client`] is the shared client. It follows **no redirects**,
//!   ignores `HTTP(S)_PROXY` (a proxy would bypass the address check), has a
//!   connect time-out of `KEYGATE_PROVIDER_TIMEOUT_MS` and no total
//!   time-out, so streamed answers are not cut. Short calls should use
//!   [`Outbound::get`] / [`Outbound::request`], which add a total time-out of
//!   the same length; streaming callers set their own `.timeout(..)`.
//! - Names are resolved by [`GuardedResolver`]: loopback, private,
//!   link-local, unspecified, multicast, shared (CGNAT), ULA and reserved
//!   addresses (IPv4 and IPv6, IPv4-mapped v6 included) are dropped, so a
//!   public name that points inside is refused when the connection is made,
//!   not just when the URL is checked. When nothing allowed is left the
//!   request fails and [`Outbound::error`] maps it to **422** "… resolves
//!   only to private addresses …".
//! - `KEYGATE_ALLOW_PRIVATE_UPSTREAMS=true` turns both checks off (for
//!   upstreams on a private network, and for the tests).
//! - [`Outbound::error`] maps a `reqwest::Error` to an [`AppError`]: time-out
//!   → **504**, connect or DNS failure → **502**, refused address → **422**,
//!   anything else → **502**, with `{"detail"}` naming the upstream and host,
//!   never a secret (reqwest's own message, which may hold the URL, is only
//!   logged at debug level without the query).
//! - [`read_body_limited`] reads a small answer with a size cap.
//! - The gateway's runs do not use the shared client:
//!   [`Outbound::forwarder`] sends them on pooled HTTP/1.1 connections of
//!   the worker thread, to an [`Endpoint`] (a checked URL taken apart
//!   once), under the same rules (see [`forward`]);
//!   [`Outbound::forward_error`] maps its failures like [`Outbound::error`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Method, RequestBuilder, Url};

use crate::config::Config;
use crate::error::AppError;

mod address;
pub mod forward;

pub use address::is_public_ip;
use address::{is_allowed, resolve_allowed};

pub use forward::{Endpoint, ForwardBody, ForwardError, Forwarder, RelayBody, Relayed};

fn build_client(allow_private: bool, timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        .dns_resolver(GuardedResolver { allow_private })
        .user_agent(concat!("keygate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the outbound HTTP client: {e}"))
}

/// The shared outbound client and its address policy.
#[derive(Clone)]
pub struct Outbound {
    client: reqwest::Client,
    allow_private: bool,
    timeout: Duration,
    /// Tells this `Outbound`'s per-thread clients and idle connections
    /// from another's.
    id: usize,
    /// The gateway's upstream client, under the same rules.
    forwarder: forward::Forwarder,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("allow_private", &self.allow_private)
            .field("timeout", &self.timeout)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// One client per worker thread and `Outbound`: a pooled connection is
    /// driven by the runtime that opened it, so sharing one pool between
    /// actix's single-threaded workers made every reuse a cross-thread
    /// wake-up (most of the gateway's CPU went to context switches).
    static THREAD_CLIENTS: std::cell::RefCell<Vec<(usize, reqwest::Client)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

static NEXT_OUTBOUND_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Outbound {
    pub fn from_config(config: &Config) -> Result<Self, String> {
        Self::new(config.allow_private_upstreams, config.provider_timeout)
    }

    pub fn new(allow_private: bool, timeout: Duration) -> Result<Self, String> {
        let id = NEXT_OUTBOUND_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Outbound {
            client: build_client(allow_private, timeout)?,
            allow_private,
            timeout,
            id,
            forwarder: Forwarder::new(id, allow_private, timeout)?,
        })
    }

    /// This thread's client (no redirects, guarded DNS, connect time-out
    /// only), built on first use with the same settings as every other.
    pub fn client(&self) -> reqwest::Client {
        THREAD_CLIENTS.with(|clients| {
            let mut clients = clients.borrow_mut();
            if let Some((_, client)) = clients.iter().find(|(id, _)| *id == self.id) {
                return client.clone();
            }
            let client = build_client(self.allow_private, self.timeout).unwrap_or_else(|error| {
                tracing::warn!(%error, "per-thread outbound client failed; using the shared one");
                self.client.clone()
            });
            clients.push((self.id, client.clone()));
            client
        })
    }

    /// The gateway's upstream client (see [`forward`]).
    pub fn forwarder(&self) -> &Forwarder {
        &self.forwarder
    }

    /// `KEYGATE_PROVIDER_TIMEOUT_MS`.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `KEYGATE_ALLOW_PRIVATE_UPSTREAMS`.
    pub fn allows_private(&self) -> bool {
        self.allow_private
    }

    /// A request with the total time-out applied.
    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.client.request(method, url).timeout(self.timeout)
    }

    /// A GET with the total time-out applied.
    pub fn get(&self, url: Url) -> RequestBuilder {
        self.request(Method::GET, url)
    }

    /// Checks a URL given by a user before anything is sent to it (see the
    /// module doc). 422 on refusal.
    pub fn check_url(&self, url: &str) -> Result<Url, AppError> {
        let parsed = Url::parse(url.trim())
            .map_err(|_| AppError::unprocessable(format!("{url:?} is not a valid URL")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(AppError::unprocessable(format!(
                "URL scheme {:?} is not allowed: use http or https",
                parsed.scheme()
            )));
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| AppError::unprocessable("the URL has no host"))?
            .to_string();
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(AppError::unprocessable(
                "the URL must not contain a user name or password",
            ));
        }
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            if !is_allowed(ip, self.allow_private) {
                return Err(private_address(&host));
            }
        }
        Ok(parsed)
    }

    /// Where the gateway sends a route: `url` through [`Outbound::check_url`]
    /// (422 on refusal), then taken apart once ([`Endpoint`]).
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, AppError> {
        Endpoint::from_checked(&self.check_url(url)?)
    }

    /// Maps a failed [`Forwarder::forward`] like [`Outbound::error`]: 422
    /// for a refused address, 504 for a connect time-out, 502 otherwise.
    pub fn forward_error(&self, error: &ForwardError, upstream: &str) -> AppError {
        match error {
            ForwardError::Blocked { host } => private_address(host),
            ForwardError::ConnectTimeout { label } => self.timed_out(upstream, label),
            ForwardError::Connect { label, cause } => {
                tracing::debug!(upstream, host = %label, %cause, "outbound connection failed");
                could_not_connect(upstream, label)
            }
            ForwardError::Exchange { label, cause } => {
                tracing::debug!(upstream, host = %label, %cause, "outbound call failed");
                no_valid_answer(upstream, label)
            }
        }
    }

    fn timed_out(&self, upstream: &str, host: &str) -> AppError {
        AppError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "{upstream} at {host} did not answer within {} ms",
                self.timeout.as_millis()
            ),
        )
    }

    /// Maps a failed call to `upstream` (a name such as "Langfuse") to the
    /// error the client sees: 504, 502 or 422 (see the module doc).
    pub fn error(&self, error: &reqwest::Error, upstream: &str) -> AppError {
        // With the port: "127.0.0.1" alone hides which server it was.
        let host = error
            .url()
            .and_then(|u| {
                let host = u.host_str()?;
                Some(match u.port() {
                    Some(port) => format!("{host}:{port}"),
                    None => host.to_string(),
                })
            })
            .unwrap_or_else(|| "the upstream".to_string());
        if let Some(blocked) = find_source::<BlockedAddress>(error) {
            return private_address(&blocked.host);
        }
        let cause = error_chain(error);
        tracing::debug!(upstream, host = %host, cause = %cause, "outbound call failed");
        if error.is_timeout() {
            return self.timed_out(upstream, &host);
        }
        if error.is_connect() {
            return could_not_connect(upstream, &host);
        }
        no_valid_answer(upstream, &host)
    }
}

fn could_not_connect(upstream: &str, host: &str) -> AppError {
    AppError::new(
        StatusCode::BAD_GATEWAY,
        format!("could not connect to {upstream} at {host}"),
    )
}

fn no_valid_answer(upstream: &str, host: &str) -> AppError {
    AppError::new(
        StatusCode::BAD_GATEWAY,
        format!("{upstream} at {host} could not be reached or gave no valid answer"),
    )
}

fn private_address(host: &str) -> AppError {
    AppError::unprocessable(format!(
        "host {host} resolves only to private, loopback or link-local addresses, which \
         are not allowed (the operator can allow them with KEYGATE_ALLOW_PRIVATE_UPSTREAMS=true)"
    ))
}

/// Reads at most `limit` bytes of a body; a longer one is a 502.
pub async fn read_body_limited(
    outbound: &Outbound,
    mut response: reqwest::Response,
    limit: usize,
    upstream: &str,
) -> Result<Vec<u8>, AppError> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(AppError::new(
                        StatusCode::BAD_GATEWAY,
                        format!("{upstream} sent an answer larger than {limit} bytes"),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(outbound.error(&e, upstream)),
        }
    }
}

/// The causes of an error, joined, with any URL query removed.
fn error_chain(error: &reqwest::Error) -> String {
    let mut parts = vec![error.without_url_text()];
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    parts.join(": ")
}

trait WithoutUrl {
    fn without_url_text(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_text(&self) -> String {
        let mut plain = self.to_string();
        if let Some(url) = self.url() {
            plain = plain.replace(url.as_str(), url.host_str().unwrap_or(""));
        }
        plain
    }
}

fn find_source<'a, T: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// A name that resolved only to addresses the policy refuses.
#[derive(Debug)]
pub struct BlockedAddress {
    pub host: String,
}

impl std::fmt::Display for BlockedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} resolves only to non-public addresses", self.host)
    }
}

impl std::error::Error for BlockedAddress {}

/// DNS resolution through tokio that drops non-public addresses unless
/// they are allowed.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        let allow_private = self.allow_private;
        Box::pin(async move {
            let allowed = resolve_allowed(&host, 0, allow_private).await?;
            if allowed.is_empty() {
                return Err(Box::new(BlockedAddress { host }) as _);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Shared handle type kept in the app state.
pub type SharedOutbound = Arc<Outbound>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_urls() {
        let strict = Outbound::new(false, Duration::from_secs(1)).unwrap();
        assert!(strict.check_url("https://cloud.langfuse.com").is_ok());
        for bad in [
            "ftp://example.com",
            "file:///etc/passwd",
            "not a url",
            "http://127.0.0.1:8080",
            "http://[::1]/",
            "http://169.254.169.254/latest",
            "http://[::ffff:7f00:1]/",
            "http://[::ffff:0:7f00:1]/",
            "http://[2002:7f00:1::1]/",
            "https://user:pass@example.com",
        ] {
            let error = strict.check_url(bad).unwrap_err();
            assert_eq!(error.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
            assert!(!error.detail().contains("pass@"), "{bad}");
        }
        let open = Outbound::new(true, Duration::from_secs(1)).unwrap();
        assert!(open.check_url("http://127.0.0.1:8080").is_ok());
        assert!(open.check_url("ftp://127.0.0.1").is_err());
    }

    #[actix_web::test]
    async fn names_resolving_to_private_addresses_are_refused() {
        let strict = Outbound::new(false, Duration::from_secs(2)).unwrap();
        let url = strict.check_url("http://localhost:9/").unwrap();
        let error = strict.get(url).send().await.unwrap_err();
        let mapped = strict.error(&error, "test upstream");
        assert_eq!(mapped.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(mapped.detail().contains("KEYGATE_ALLOW_PRIVATE_UPSTREAMS"));
    }

    #[actix_web::test]
    async fn a_closed_port_is_a_502() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let open = Outbound::new(true, Duration::from_secs(2)).unwrap();
        let url = open
            .check_url(&format!("http://127.0.0.1:{port}/"))
            .unwrap();
        let error = open.get(url).send().await.unwrap_err();
        let mapped = open.error(&error, "test upstream");
        assert_eq!(mapped.status(), StatusCode::BAD_GATEWAY);
        assert!(mapped.detail().contains("127.0.0.1"));
    }
}
