//! Which `Host` names keygate answers to (`KEYGATE_ALLOWED_HOSTS`), and
//! whether a browser request is same-origin.
//!
//! The threat is DNS rebinding: a page on `attacker.example` re-points its
//! name at 127.0.0.1 and then talks to a keygate on the victim's laptop as
//! if it were its own origin, so the browser's same-origin rule does not
//! help. The browser still sends `Host: attacker.example`, and that is what
//! is checked here. A keygate bound to loopback therefore answers only to
//! loopback names and addresses unless told otherwise.

use std::net::IpAddr;

use actix_web::http::header;
use actix_web::HttpRequest;

pub const HOST_NOT_ALLOWED: &str = "Host not allowed";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedHosts {
    /// `KEYGATE_ALLOWED_HOSTS=*`: every host (no rebinding protection).
    Any,
    /// Unset while bound to a non-loopback address: every host is served
    /// (a warning is logged at start-up), but no host counts as named, so
    /// auto-login is refused.
    Unset,
    /// Unset while bound to loopback: `localhost`, `127.0.0.0/8`, `::1`.
    Loopback,
    /// The listed names and addresses (lower case, ports removed).
    Listed(Vec<String>),
}

impl AllowedHosts {
    /// From `KEYGATE_ALLOWED_HOSTS` (comma-separated; ports ignored) and the
    /// address keygate listens on.
    pub fn from_setting(setting: Option<&str>, bind_host: &str) -> Result<Self, String> {
        let Some(setting) = setting.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(if is_loopback_name(&normalise(bind_host)) {
                AllowedHosts::Loopback
            } else {
                AllowedHosts::Unset
            });
        };
        let entries: Vec<String> = setting
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(normalise)
            .collect();
        if entries.iter().any(|entry| entry == "*") {
            return if entries.len() == 1 {
                Ok(AllowedHosts::Any)
            } else {
                Err("`*` allows every host; list no other host with it".into())
            };
        }
        if let Some(bad) = entries
            .iter()
            .find(|e| e.is_empty() || e.contains(|c: char| c.is_whitespace() || c == '/'))
        {
            return Err(format!("{bad:?} is not a host name or address"));
        }
        Ok(AllowedHosts::Listed(entries))
    }

    /// Whether a request with this `Host` (as sent, port included) is
    /// served. A request without a host is refused unless every host is.
    pub fn allows(&self, host: Option<&str>) -> bool {
        match self {
            AllowedHosts::Any | AllowedHosts::Unset => true,
            _ => self.names(host),
        }
    }

    /// Whether the host is one the operator (or the loopback default)
    /// named: what auto-login requires. `*` and the non-loopback default
    /// name nothing.
    pub fn names(&self, host: Option<&str>) -> bool {
        let Some(host) = host else {
            return false;
        };
        match self {
            AllowedHosts::Any | AllowedHosts::Unset => false,
            // Every request is checked: the loopback default compares the
            // name as sent, without building a normalised copy.
            AllowedHosts::Loopback => is_plain_loopback(host) || is_loopback_name(bare_name(host)),
            AllowedHosts::Listed(entries) => {
                let host = normalise(host);
                entries.iter().any(|entry| same_host(entry, &host))
            }
        }
    }
}

/// Why auto-login refuses this request, if it does: it hands out a
/// superuser session to whoever asks, so it answers only a host the
/// operator (or the loopback default) named, and only a same-origin
/// request, never a page of another site.
pub fn auto_login_refusal(allowed: &AllowedHosts, req: &HttpRequest) -> Option<&'static str> {
    if !allowed.names(request_host(req)) {
        return Some(
            "Auto login answers only a host named in KEYGATE_ALLOWED_HOSTS \
             (or a loopback address when keygate listens on loopback)",
        );
    }
    if !is_same_origin(req) {
        return Some("Auto login refuses cross-site requests");
    }
    None
}

/// The `Host` a request was sent to, as sent (port included).
pub fn request_host(req: &HttpRequest) -> Option<&str> {
    match req.headers().get(header::HOST) {
        Some(value) => value.to_str().ok(),
        None => req.uri().host(),
    }
}

/// True unless the browser says the request comes from another origin:
/// `Sec-Fetch-Site` other than `same-origin` or `none` (typed into the
/// address bar), or an `Origin` whose host and port are not this request's
/// `Host`. Scripts send neither header and pass.
pub fn is_same_origin(req: &HttpRequest) -> bool {
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return false;
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(host)) = (origin.to_str(), request_host(req)) else {
        return false;
    };
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false; // `null`, or not an origin at all
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => "80",
        "https" => "443",
        _ => return false,
    };
    let with_port = |authority: &str| -> (String, String) {
        let (name, port) = split_port(authority);
        (normalise(name), port.unwrap_or(default_port).to_string())
    };
    with_port(authority) == with_port(host)
}

/// `name:port`, `[v6]:port`, `name` → (name, port).
fn split_port(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((inner, tail)) => (inner, tail.strip_prefix(':')),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        // A bare IPv6 address has several colons and no port.
        Some((name, port)) if !name.contains(':') => (name, Some(port)),
        _ => (authority, None),
    }
}

/// Port and brackets removed, no trailing dot; case kept.
fn bare_name(host: &str) -> &str {
    let (name, _) = split_port(host.trim());
    name.trim_end_matches('.')
}

/// Lower case, port and brackets removed, no trailing dot.
fn normalise(host: &str) -> String {
    bare_name(host).to_ascii_lowercase()
}

fn same_host(entry: &str, host: &str) -> bool {
    match (entry.parse::<IpAddr>(), host.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a.to_canonical() == b.to_canonical(),
        _ => entry == host,
    }
}

/// `127.0.0.1` or `localhost`, with or without a port, as local clients
/// send it: the common case, told without taking the name apart.
fn is_plain_loopback(host: &str) -> bool {
    let Some(port) = host
        .strip_prefix("127.0.0.1")
        .or_else(|| host.strip_prefix("localhost"))
    else {
        return false;
    };
    port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// `host` bare (see [`bare_name`]), in any case.
fn is_loopback_name(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn the_loopback_default() {
        let hosts = AllowedHosts::from_setting(None, "127.0.0.1").unwrap();
        assert_eq!(hosts, AllowedHosts::Loopback);
        for ok in [
            "localhost",
            "LOCALHOST:7860",
            "127.0.0.1:7860",
            "127.1.2.3",
            "[::1]:7860",
            "localhost.",
        ] {
            assert!(hosts.allows(Some(ok)) && hosts.names(Some(ok)), "{ok}");
        }
        for bad in [
            "rebind.attacker.example",
            "10.0.0.1:7860",
            "localhost.attacker.example",
            "",
        ] {
            assert!(!hosts.allows(Some(bad)), "{bad}");
        }
        assert!(!hosts.allows(None));
        assert_eq!(
            AllowedHosts::from_setting(Some(" "), "[::1]").unwrap(),
            AllowedHosts::Loopback
        );
        assert_eq!(
            AllowedHosts::from_setting(None, "localhost").unwrap(),
            AllowedHosts::Loopback
        );
    }

    #[test]
    fn the_plain_loopback_forms() {
        for plain in ["127.0.0.1", "127.0.0.1:7860", "localhost", "localhost:1"] {
            assert!(is_plain_loopback(plain), "{plain}");
        }
        for other in [
            "127.0.0.1:",
            "127.0.0.1:7860x",
            "127.0.0.10",
            "127.0.0.1.attacker.example",
            "localhost.attacker.example",
            "localhost:80:80",
            "LOCALHOST",
        ] {
            assert!(!is_plain_loopback(other), "{other}");
        }
        let hosts = AllowedHosts::Loopback;
        assert!(
            hosts.allows(Some("127.0.0.10")),
            "still loopback, the long way"
        );
        assert!(!hosts.allows(Some("127.0.0.1.attacker.example")));
    }

    #[test]
    fn unset_on_a_public_address_serves_all_but_names_none() {
        let hosts = AllowedHosts::from_setting(None, "0.0.0.0").unwrap();
        assert_eq!(hosts, AllowedHosts::Unset);
        assert!(hosts.allows(Some("anything.example")) && hosts.allows(None));
        assert!(!hosts.names(Some("localhost")));
        let any = AllowedHosts::from_setting(Some("*"), "127.0.0.1").unwrap();
        assert!(any.allows(Some("anything.example")) && !any.names(Some("localhost")));
    }

    #[test]
    fn a_list_ignores_ports_and_case() {
        let hosts =
            AllowedHosts::from_setting(Some("Keygate.Example:443, 10.0.0.5,[::1]"), "0.0.0.0")
                .unwrap();
        assert!(hosts.allows(Some("keygate.example")));
        assert!(hosts.allows(Some("KEYGATE.example:8080")));
        assert!(hosts.allows(Some("10.0.0.5:7860")));
        assert!(hosts.allows(Some("[::1]:7860")));
        assert!(!hosts.allows(Some("localhost")), "only what is listed");
        assert!(!hosts.allows(Some("evil.keygate.example")));
        assert!(AllowedHosts::from_setting(Some("*,localhost"), "x").is_err());
        assert!(AllowedHosts::from_setting(Some("a b"), "x").is_err());
    }

    fn same_origin(headers: &[(&str, &str)]) -> bool {
        let mut req = TestRequest::default().insert_header(("host", "localhost:7860"));
        for pair in headers {
            req = req.insert_header(*pair);
        }
        is_same_origin(&req.to_http_request())
    }

    #[test]
    fn same_origin_requests() {
        assert!(same_origin(&[]), "a script sends neither header");
        assert!(same_origin(&[("origin", "http://localhost:7860")]));
        assert!(same_origin(&[("origin", "http://LOCALHOST:7860")]));
        assert!(same_origin(&[("sec-fetch-site", "same-origin")]));
        assert!(same_origin(&[("sec-fetch-site", "none")]));
        assert!(!same_origin(&[("sec-fetch-site", "cross-site")]));
        assert!(!same_origin(&[("sec-fetch-site", "same-site")]));
        assert!(!same_origin(&[("origin", "http://evil.example")]));
        assert!(!same_origin(&[("origin", "http://localhost:9999")]));
        assert!(!same_origin(&[("origin", "null")]));
        assert!(!same_origin(&[("origin", "https://localhost:7860:x")]));
    }
}
