//! Which address a request comes from, for throttling.
//!
//! The TCP peer is the client unless it is one of the operator's reverse
//! proxies (`KEYGATE_TRUSTED_PROXIES`). Only then do `X-Forwarded-For` or
//! `Forwarded: for=` name the client, read from the right: the right-most
//! hop that is not itself a trusted proxy. Everything left of it was
//! written by the client and proves nothing. Without this rule, anyone
//! could dodge throttling (or pin it on someone else) by sending a header.
//!
//! A leaf: CIDR parsing is small enough not to need a crate.

use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use actix_web::HttpRequest;

/// An address block such as `10.0.0.0/8` or `fd00::/8`; a bare address is
/// a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.network, addr.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }

    /// True when every address of this block is in `outer`.
    pub fn within(&self, outer: &Cidr) -> bool {
        self.prefix >= outer.prefix && outer.contains(self.network)
    }

    /// Parses a comma-separated list (`KEYGATE_TRUSTED_PROXIES`); blanks
    /// between commas are skipped.
    pub fn parse_list(text: &str) -> Result<Vec<Cidr>, String> {
        text.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(str::parse)
            .collect()
    }
}

fn prefix_matches(network: &[u8], addr: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    if network[..full] != addr[..full] {
        return false;
    }
    let rest = prefix % 8;
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        network[full] & mask == addr[full] & mask
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        let network = network.to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { network, prefix })
    }
}

/// The client's address: the peer, or, when the peer is a trusted proxy,
/// the right-most forwarded hop that is not a trusted proxy (see the
/// module doc). `X-Forwarded-For` is read when present, else `Forwarded`.
/// An unreadable hop ends the walk at the last trusted address seen.
pub fn client_ip(req: &HttpRequest, trusted: &[Cidr]) -> IpAddr {
    let peer = req
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |addr| {
            addr.ip().to_canonical()
        });
    if !trusted.iter().any(|cidr| cidr.contains(peer)) {
        return peer;
    }
    let headers = req.headers();
    let hops: Vec<&str> = if headers.contains_key("x-forwarded-for") {
        headers
            .get_all("x-forwarded-for")
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect()
    } else {
        headers
            .get_all("forwarded")
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(forwarded_for)
            .collect()
    };
    let mut client = peer;
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(addr) => {
                client = addr;
                if !trusted.iter().any(|cidr| cidr.contains(addr)) {
                    break;
                }
            }
            None => break,
        }
    }
    client
}

/// The `for=` value of one `Forwarded` element.
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// An address as a proxy writes it: `192.0.2.1`, `192.0.2.1:4711`,
/// `2001:db8::1` or `[2001:db8::1]:4711`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(addr) = hop.parse::<IpAddr>() {
        return Some(addr.to_canonical());
    }
    if let Ok(addr) = hop.parse::<std::net::SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    hop.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<IpAddr>().ok())
        .map(|addr| addr.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn cidrs(text: &str) -> Vec<Cidr> {
        Cidr::parse_list(text).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn blocks_within_blocks() {
        let outer: Cidr = "203.0.113.0/24".parse().unwrap();
        let inner: Cidr = "203.0.113.128/25".parse().unwrap();
        assert!(inner.within(&outer));
        assert!(!outer.within(&inner));
        assert!(outer.within(&outer));
        assert!(!"198.51.100.0/25".parse::<Cidr>().unwrap().within(&outer));
        assert!(!"2001:db8::/32".parse::<Cidr>().unwrap().within(&outer));
    }

    #[test]
    fn parses_and_matches_blocks() {
        let list = cidrs("10.0.0.0/8, 192.168.1.7 ,fd00::/8,,[::1]");
        assert!(list[0].contains(ip("10.255.0.1")));
        assert!(!list[0].contains(ip("11.0.0.1")));
        assert!(list[1].contains(ip("192.168.1.7")));
        assert!(!list[1].contains(ip("192.168.1.8")));
        assert!(list[2].contains(ip("fd12::1")));
        assert!(list[3].contains(ip("::1")));
        assert!(cidrs("0.0.0.0/0")[0].contains(ip("203.0.113.9")));
        assert!(cidrs("172.16.0.0/12")[0].contains(ip("172.31.255.255")));
        assert!(!cidrs("172.16.0.0/12")[0].contains(ip("172.32.0.0")));
        // IPv4-mapped peers (a dual-stack listener) count as IPv4.
        assert!(list[0].contains(ip("::ffff:10.1.2.3")));
        for bad in ["10.0.0.0/33", "nonsense", "::/129", "10.0.0.0/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    fn from(peer: &str, headers: &[(&str, &str)], trusted: &str) -> IpAddr {
        let mut req = TestRequest::default().peer_addr(peer.parse().unwrap());
        for (name, value) in headers {
            req = req.append_header((*name, *value));
        }
        client_ip(&req.to_http_request(), &cidrs(trusted))
    }

    #[test]
    fn headers_count_only_from_trusted_proxies() {
        let xff = [("x-forwarded-for", "198.51.100.7")];
        assert_eq!(from("127.0.0.1:5000", &xff, ""), ip("127.0.0.1"));
        assert_eq!(from("127.0.0.1:5000", &xff, "10.0.0.0/8"), ip("127.0.0.1"));
        assert_eq!(
            from("127.0.0.1:5000", &xff, "127.0.0.0/8"),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn reads_the_right_most_untrusted_hop() {
        let trusted = "127.0.0.1, 10.0.0.0/8";
        // The client forged the first entry; the proxies appended the rest.
        let chain = [("x-forwarded-for", "1.2.3.4, 198.51.100.7, 10.0.0.5")];
        assert_eq!(from("127.0.0.1:1", &chain, trusted), ip("198.51.100.7"));
        // Several header lines are one list, in order.
        let lines = [
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "198.51.100.7:8080"),
        ];
        assert_eq!(from("127.0.0.1:1", &lines, trusted), ip("198.51.100.7"));
        // Only proxies: the left-most of them.
        let all = [("x-forwarded-for", "10.0.0.9, 10.0.0.5")];
        assert_eq!(from("127.0.0.1:1", &all, trusted), ip("10.0.0.9"));
        // Garbage ends the walk at the last trusted address.
        let junk = [("x-forwarded-for", "198.51.100.7, not-an-ip, 10.0.0.5")];
        assert_eq!(from("127.0.0.1:1", &junk, trusted), ip("10.0.0.5"));
        // No header: the peer.
        assert_eq!(from("127.0.0.1:1", &[], trusted), ip("127.0.0.1"));
    }

    #[test]
    fn reads_forwarded_when_there_is_no_x_forwarded_for() {
        let forwarded = [(
            "forwarded",
            "for=1.2.3.4, for=\"[2001:db8::7]:4711\";proto=https;by=10.0.0.1",
        )];
        assert_eq!(
            from("127.0.0.1:1", &forwarded, "127.0.0.1"),
            ip("2001:db8::7")
        );
        let v4 = [("forwarded", "proto=http;For=198.51.100.7:80")];
        assert_eq!(from("127.0.0.1:1", &v4, "127.0.0.1"), ip("198.51.100.7"));
        // `for=unknown` (an obfuscated hop) is unreadable: the proxy counts.
        let hidden = [("forwarded", "for=unknown")];
        assert_eq!(from("127.0.0.1:1", &hidden, "127.0.0.1"), ip("127.0.0.1"));
    }
}
