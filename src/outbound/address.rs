//! The SSRF rule's address test, and name resolution under it, shared
//! by the `reqwest` client's resolver and the gateway's own connections
//! (`forward`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Whether the rule lets a connection go to `ip`: any address when the
/// operator allows private upstreams (`KEYGATE_ALLOW_PRIVATE_UPSTREAMS`),
/// public ones only otherwise.
pub fn is_allowed(ip: IpAddr, allow_private: bool) -> bool {
    allow_private || is_public_ip(ip)
}

/// The addresses `host` resolves to (with `port`) that [`is_allowed`]
/// lets through; empty when the name points only where it may not.
pub async fn resolve_allowed(
    host: &str,
    port: u16,
    allow_private: bool,
) -> std::io::Result<Vec<SocketAddr>> {
    Ok(tokio::net::lookup_host((host, port))
        .await?
        .filter(|address| is_allowed(address.ip(), allow_private))
        .collect())
}

/// True for addresses on the public internet; false for loopback, private,
/// link-local, unspecified, multicast, broadcast, shared (100.64/10),
/// documentation, benchmarking and reserved ranges, IPv6 ULA and
/// link-local, and every IPv6 form that carries an IPv4 address (mapped,
/// translated, compatible, NAT64, 6to4, Teredo) when that address is one
/// of those.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

/// The IPv4 address in the last 32 bits of an IPv6 address.
fn embedded_v4(segments: [u16; 8]) -> Ipv4Addr {
    let [.., hi, lo] = segments;
    Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let segments = ip.segments();
    // Forms that carry an IPv4 address are judged by it: NAT64's
    // well-known prefix 64:ff9b::/96, IPv4-translated ::ffff:0:a.b.c.d
    // (::ffff:0:0/96) and the local-use NAT64 prefix 64:ff9b:1::/48.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
        || segments[..6] == [0, 0, 0, 0, 0xffff, 0]
        || segments[..3] == [0x64, 0xff9b, 1]
    {
        return is_public_v4(embedded_v4(segments));
    }
    // 6to4 2002:a.b.c.d::/48 routes to the IPv4 address in bits 16-47.
    if segments[0] == 0x2002 {
        return is_public_v4(embedded_v4([0, 0, 0, 0, 0, 0, segments[1], segments[2]]));
    }
    // Teredo 2001:0::/32: the server's IPv4 address in bits 32-63, the
    // client's inverted in the last 32; both must be public.
    if segments[0] == 0x2001 && segments[1] == 0 {
        let server = embedded_v4([0, 0, 0, 0, 0, 0, segments[2], segments[3]]);
        let client = embedded_v4([0, 0, 0, 0, 0, 0, !segments[6], !segments[7]]);
        return is_public_v4(server) && is_public_v4(client);
    }
    // Deprecated IPv4-compatible form ::a.b.c.d.
    if segments[..6] == [0; 6] {
        if ip.is_unspecified() || ip.is_loopback() {
            return false;
        }
        return is_public_v4(embedded_v4(segments));
    }
    !(ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (segments[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (segments[0] == 0x2001 && segments[1] == 0x0db8)) // documentation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_addresses() {
        for blocked in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "::ffff:0:7f00:1",
            "::ffff:0:a00:1",
            "64:ff9b:1::a00:1",
            "2002:7f00:1::1",
            "2002:c0a8:101::",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:0:7f00:1::1",
        ] {
            assert!(!is_public_ip(blocked.parse().unwrap()), "{blocked}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "::ffff:0:101:101",
            "2002:101:101::1",
            "2001:0:4136:e378:8000:63bf:f7f7:f7f7",
        ] {
            assert!(is_public_ip(public.parse().unwrap()), "{public}");
        }
    }
}
