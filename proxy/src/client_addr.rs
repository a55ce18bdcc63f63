//! The client's address: the socket peer, or — only when the peer is a configured trusted proxy —
//! the nearest untrusted address in `X-Forwarded-For`.
//!
//! `X-Forwarded-For` is written by each hop appending the address it received from, so the
//! right-most entries were written by the proxies closest to us. Walking from the right and
//! skipping trusted proxies stops at the first address a trusted hop vouched for; everything
//! further left was written by the client and may be forged. An untrusted peer's header is
//! ignored entirely (it is still forwarded, with the peer appended, as other proxies do).

use std::net::{IpAddr, SocketAddr};

use http::header::HeaderMap;
use ipnet::IpNet;

use crate::message::headers::X_FORWARDED_FOR;

/// Networks whose `X-Forwarded-For` is believed (`--trusted-proxies`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Trust these networks.
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies { nets }
    }

    /// Whether no proxy is trusted (the socket peer is always the client).
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client address for a request from `peer` carrying `headers`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if self.nets.is_empty() || !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        // Several header lines form one list, in order (RFC 9110 §5.3).
        let lines: Vec<&[u8]> = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        for line in lines.iter().rev() {
            for entry in line.rsplit(|b| *b == b',') {
                match parse_entry(entry) {
                    // Garbage ends the trusted chain: what is left of it cannot be vouched for.
                    None => return client,
                    Some(ip) if self.trusts(ip) => client = ip,
                    Some(ip) => return ip,
                }
            }
        }
        client
    }
}

/// Parse a comma-separated list of CIDRs or bare addresses (`10.0.0.0/8,192.0.2.7`).
pub fn parse_list(text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| format!("`{s}` is not a CIDR or IP address (e.g. 10.0.0.0/8)"))
        })
        .collect()
}

/// One `X-Forwarded-For` entry: `ip`, `ip:port`, `[v6]` or `[v6]:port`, with optional spaces.
fn parse_entry(raw: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(raw).ok()?.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    let inner = text.strip_prefix('[')?.split(']').next()?;
    inner.parse::<IpAddr>().ok().map(canonical)
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`, what a dual-stack socket reports) as plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(X_FORWARDED_FOR, l.parse().expect("header value"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn trusted(list: &str) -> TrustedProxies {
        TrustedProxies::new(parse_list(list).expect("list"))
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_claims() {
        let t = trusted("10.0.0.0/8");
        let forged = headers(&["127.0.0.1, 10.0.0.5"]);
        assert_eq!(t.client_ip(ip("203.0.113.9"), &forged), ip("203.0.113.9"));
        assert_eq!(
            TrustedProxies::default().client_ip(ip("10.0.0.1"), &forged),
            ip("10.0.0.1"),
            "nothing trusted: the header is never believed"
        );
    }

    #[test]
    fn trusted_chain_is_walked_from_the_right() {
        let t = trusted("10.0.0.0/8, 2001:db8:ffff::/48");
        // client forged "1.1.1.1"; the real client 198.51.100.4 was appended by a trusted LB.
        let h = headers(&["1.1.1.1, 198.51.100.4", "10.0.0.7"]);
        assert_eq!(t.client_ip(ip("10.0.0.2"), &h), ip("198.51.100.4"));
        let v6 = headers(&["2001:db8::42, [2001:db8:ffff::1]:443"]);
        assert_eq!(t.client_ip(ip("10.0.0.2"), &v6), ip("2001:db8::42"));
        let with_port = headers(&["198.51.100.4:5555"]);
        assert_eq!(t.client_ip(ip("10.0.0.2"), &with_port), ip("198.51.100.4"));
    }

    #[test]
    fn all_trusted_or_garbage_stops_at_the_last_vouched_address() {
        let t = trusted("10.0.0.0/8");
        assert_eq!(
            t.client_ip(ip("10.0.0.2"), &headers(&["10.1.1.1"])),
            ip("10.1.1.1")
        );
        assert_eq!(
            t.client_ip(
                ip("10.0.0.2"),
                &headers(&["203.0.113.1, unknown, 10.9.9.9"])
            ),
            ip("10.9.9.9"),
            "an unparseable hop ends the chain"
        );
        assert_eq!(
            t.client_ip(ip("10.0.0.2"), &HeaderMap::new()),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        let t = trusted("10.0.0.0/8");
        let h = headers(&["198.51.100.4"]);
        assert_eq!(t.client_ip(ip("::ffff:10.0.0.2"), &h), ip("198.51.100.4"));
    }

    #[test]
    fn list_parsing() {
        assert_eq!(parse_list("10.1.2.3/8, 192.0.2.7").expect("ok").len(), 2);
        assert!(parse_list("10.0.0.0/33")
            .expect_err("bad prefix")
            .contains("10.0.0.0/33"));
        assert!(parse_list("").expect("empty").is_empty());
    }
}
