//! Who sent a webhook: the TCP peer, or, when that peer is one of the configured trusted
//! proxies (`server.trusted_proxies`), the client address the proxies forwarded in
//! `X-Forwarded-For`. Ledig signs nothing, so an IP allow-list is one of its few protections,
//! and behind a load balancer every TCP peer is the load balancer.
//!
//! Each proxy appends the address it received the request from, so the list is read from the
//! right: trusted proxies are skipped and the first address that is not one is the client.
//! Everything to the left of it was written by the client itself and is never believed. A
//! request from a peer that is not a trusted proxy keeps its peer address whatever it sends.
//! This module decides the address only; what is allowed is the source's business.

use http::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// The longest part of a bad entry quoted back in the error.
const QUOTED: usize = 64;

/// A trusted proxy forwarded a header the client address cannot be read from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("X-Forwarded-For from trusted proxy {proxy} holds `{entry}`, not an IP address")]
pub(super) struct ForwardedError {
    proxy: IpAddr,
    entry: String,
}

/// The client's address for a request from `peer`.
pub(super) fn client_addr(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[IpNet],
) -> Result<IpAddr, ForwardedError> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Ok(peer);
    }
    let bad = |entry: &str| ForwardedError {
        proxy: peer,
        entry: entry.chars().take(QUOTED).collect(),
    };
    // Several header fields form one list, in order (RFC 9110 section 5.3).
    let mut entries = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let text = value.to_str().map_err(|_| bad("<not ASCII>"))?;
        entries.extend(text.split(',').map(str::trim).filter(|e| !e.is_empty()));
    }
    let mut client = peer;
    for entry in entries.iter().rev() {
        let ip = parse_entry(entry).ok_or_else(|| bad(entry))?;
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    Ok(client)
}

/// `203.0.113.7`, `2001:db8::1`, and the forms some proxies add a port or brackets to:
/// `203.0.113.7:4711`, `[2001:db8::1]`, `[2001:db8::1]:4711`.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse().ok())
        })?;
    // An IPv4 client seen through an IPv6 socket is the IPv4 client.
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const PROXY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 5));

    fn trusted() -> Vec<IpNet> {
        vec![
            "10.0.0.0/8".parse().expect("net"),
            "::1/128".parse().expect("net"),
        ]
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    fn client(peer: IpAddr, values: &[&str]) -> Result<IpAddr, ForwardedError> {
        client_addr(peer, &forwarded(values), &trusted())
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn the_rightmost_address_that_is_not_a_trusted_proxy_is_the_client() {
        assert_eq!(client(PROXY, &["203.0.113.7"]), Ok(ip("203.0.113.7")));
        // The client wrote the first entry itself; the proxies appended the rest.
        assert_eq!(
            client(PROXY, &["198.51.100.1, 203.0.113.7, 10.1.2.3"]),
            Ok(ip("203.0.113.7"))
        );
        assert_eq!(
            client(PROXY, &["198.51.100.1", "203.0.113.7", "10.1.2.3"]),
            Ok(ip("203.0.113.7")),
            "several header fields are one list"
        );
        // Ports, brackets and IPv4-mapped IPv6 as some proxies write them.
        assert_eq!(client(PROXY, &["203.0.113.7:4711"]), Ok(ip("203.0.113.7")));
        assert_eq!(
            client(PROXY, &["[2001:db8::1]:4711"]),
            Ok(ip("2001:db8::1"))
        );
        assert_eq!(client(PROXY, &["[2001:db8::1]"]), Ok(ip("2001:db8::1")));
        assert_eq!(
            client(PROXY, &["::ffff:203.0.113.7"]),
            Ok(ip("203.0.113.7"))
        );
    }

    #[test]
    fn only_a_trusted_peer_is_believed() {
        let outside = ip("198.51.100.9");
        assert_eq!(client(outside, &["10.0.0.1"]), Ok(outside));
        assert_eq!(
            client_addr(PROXY, &forwarded(&["203.0.113.7"]), &[]),
            Ok(PROXY)
        );
        // Without the header, or with only proxies in it, the leftmost proxy is the client.
        assert_eq!(client(PROXY, &[]), Ok(PROXY));
        assert_eq!(client(PROXY, &["10.9.9.9, 10.1.1.1"]), Ok(ip("10.9.9.9")));
    }

    #[test]
    fn junk_where_the_client_should_be_is_an_error_junk_left_of_it_is_ignored() {
        assert_eq!(
            client(PROXY, &["not-an-ip, 203.0.113.7"]),
            Ok(ip("203.0.113.7"))
        );
        let e = client(PROXY, &["203.0.113.7, unknown"]).expect_err("junk");
        assert_eq!(
            e.to_string(),
            "X-Forwarded-For from trusted proxy 10.0.0.5 holds `unknown`, not an IP address"
        );
        let long = "x".repeat(500);
        let e = client(PROXY, &[&long]).expect_err("junk");
        assert!(e.to_string().len() < 150, "{e}");
    }
}
