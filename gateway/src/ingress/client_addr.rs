//! Who sent a webhook: the TCP peer, or, when that peer is one of the configured trusted
//! proxies (`server.trusted_proxies`), the client address the proxies forwarded in the header
//! they manage (`server.forwarded_header`: `X-Forwarded-For`, or RFC 7239 `Forwarded`'s `for=`).
//! Ledig signs nothing, so an IP allow-list is one of its few protections, and behind a load
//! balancer every TCP peer is the load balancer.
//!
//! Each proxy appends the address it received the request from, so the list is read from the
//! right: trusted proxies are skipped and the first address that is not one is the client.
//! Everything to the left of it was written by the client itself and is never believed. A
//! request from a peer that is not a trusted proxy keeps its peer address whatever it sends.
//! This module decides the address only; what is allowed is the source's business.

use crate::config::{ForwardedHeader, TrustedProxies};
use http::HeaderMap;
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

/// The longest part of a bad entry quoted back in the error.
const QUOTED: usize = 64;

/// A trusted proxy forwarded a header the client address cannot be read from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{header} from trusted proxy {proxy} holds `{entry}`, not an IP address")]
pub(super) struct ForwardedError {
    header: &'static str,
    proxy: IpAddr,
    entry: String,
}

/// The client's address for a request from `peer`.
pub(super) fn client_addr(
    peer: IpAddr,
    headers: &HeaderMap,
    proxies: &TrustedProxies,
) -> Result<IpAddr, ForwardedError> {
    // An IPv4 peer of a dual-stack listener (`[::]`) arrives as `::ffff:a.b.c.d`: it is that
    // IPv4 address, as the forwarded entries and the configured networks are written.
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| proxies.networks.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Ok(peer);
    }
    let bad = |entry: &str| ForwardedError {
        header: proxies.header.name(),
        proxy: peer,
        entry: entry.chars().take(QUOTED).collect(),
    };
    // Several header fields form one list, in order (RFC 9110 section 5.3).
    let mut entries: Vec<Cow<'_, str>> = Vec::new();
    for value in headers.get_all(proxies.header.name()) {
        let text = value.to_str().map_err(|_| bad("<not ASCII>"))?;
        match proxies.header {
            // Empty list members are allowed by the list syntax and carry nothing.
            ForwardedHeader::XForwardedFor => entries.extend(
                text.split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(Cow::Borrowed),
            ),
            ForwardedHeader::Forwarded => {
                entries.extend(forwarded_for(text).into_iter().map(Cow::Owned));
            }
        }
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

/// Whether a request from `peer` reached a trusted proxy over TLS: the proxy says so with
/// `X-Forwarded-Proto: https` (or `proto=https` in its last `Forwarded` element). From any
/// other peer the header is the client's word, and the answer is no.
pub(super) fn forwarded_https(peer: IpAddr, headers: &HeaderMap, proxies: &TrustedProxies) -> bool {
    let peer = peer.to_canonical();
    if !proxies.networks.iter().any(|n| n.contains(&peer)) {
        return false;
    }
    let last = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .last()
            .map(|v| v.trim().to_ascii_lowercase())
    };
    match proxies.header {
        ForwardedHeader::XForwardedFor => last("x-forwarded-proto").is_some_and(|p| p == "https"),
        ForwardedHeader::Forwarded => last("forwarded").is_some_and(|element| {
            element
                .split(';')
                .any(|pair| pair.trim() == "proto=https" || pair.trim() == "proto=\"https\"")
        }),
    }
}

/// The `for=` value of each element of one `Forwarded` field value (RFC 7239), unquoted, in
/// order. An element without one (or with an empty one) gives `<no for=>`, which is no
/// address. A field value that does not follow the grammar (`pair *(";" pair)` per element,
/// elements split by `,`, a value a token or a quoted string followed by `;`, `,` or the end)
/// is one `<malformed>` entry: a client could otherwise open a quoted string in a header the
/// proxy appends to, swallowing the proxy's own element into a parameter of its own.
fn forwarded_for(value: &str) -> Vec<String> {
    parse_forwarded(value).unwrap_or_else(|| vec!["<malformed>".to_owned()])
}

fn parse_forwarded(value: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = value.trim_start();
    loop {
        // Empty list members are allowed by the list syntax and carry nothing.
        while let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        }
        if rest.is_empty() {
            break;
        }
        let mut client = None;
        // One element: pairs (empty ones allowed) until `,` or the end.
        loop {
            match rest.as_bytes().first() {
                None | Some(b',') => break,
                Some(b';') => {
                    rest = rest[1..].trim_start();
                    continue;
                }
                Some(_) => {}
            }
            let (name, after_name) = rest.split_at(rest.find('=')?);
            let name = name.trim();
            if name.is_empty() || !name.bytes().all(is_tchar) {
                return None;
            }
            let (value, after_value) = pair_value(&after_name[1..])?;
            if name.eq_ignore_ascii_case("for") {
                // A parameter occurs at most once per element (RFC 7239 section 4).
                if client.replace(value).is_some() {
                    return None;
                }
            }
            rest = after_value.trim_start();
            if !matches!(rest.as_bytes().first(), None | Some(b';' | b',')) {
                return None;
            }
        }
        // Never skipped: the element a proxy wrote must name the client.
        out.push(
            client
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "<no for=>".to_owned()),
        );
    }
    Some(out)
}

/// The value at the start of `text` (a token, or a quoted string without its quotes and
/// escapes) and what follows it.
fn pair_value(text: &str) -> Option<(String, &str)> {
    if let Some(quoted) = text.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return Some((value, &quoted[i + 1..])),
                '\\' => value.push(chars.next()?.1),
                c => value.push(c),
            }
        }
        return None; // unterminated
    }
    // Lenient about the characters (proxies write `for=[2001:db8::1]` unquoted), strict
    // about where the value ends.
    let end = text
        .find(|c: char| c == ';' || c == ',' || c == '"' || c.is_whitespace())
        .unwrap_or(text.len());
    let (value, rest) = text.split_at(end);
    (!rest.starts_with('"')).then(|| (value.to_owned(), rest))
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
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

    /// The session cookie is `Secure` only when a trusted proxy says the client used HTTPS;
    /// anyone else's `X-Forwarded-Proto` is the client's word.
    #[test]
    fn https_is_believed_from_trusted_proxies_only() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("http, https"));
        let xff = trusted(ForwardedHeader::XForwardedFor);
        assert!(forwarded_https(PROXY, &h, &xff));
        let stranger: IpAddr = "192.0.2.1".parse().expect("ip");
        assert!(!forwarded_https(stranger, &h, &xff));
        h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        assert!(!forwarded_https(PROXY, &h, &xff));
        let fwd = trusted(ForwardedHeader::Forwarded);
        h.insert(
            "forwarded",
            HeaderValue::from_static("for=192.0.2.1;proto=https"),
        );
        assert!(forwarded_https(PROXY, &h, &fwd));
    }

    fn trusted(header: ForwardedHeader) -> TrustedProxies {
        TrustedProxies {
            networks: vec![
                "10.0.0.0/8".parse().expect("net"),
                "::1/128".parse().expect("net"),
            ],
            header,
        }
    }

    fn with(name: &str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        with("x-forwarded-for", values)
    }

    fn client(peer: IpAddr, values: &[&str]) -> Result<IpAddr, ForwardedError> {
        client_addr(
            peer,
            &forwarded(values),
            &trusted(ForwardedHeader::XForwardedFor),
        )
    }

    /// The client by RFC 7239 `Forwarded` header fields.
    fn client_7239(values: &[&str]) -> Result<IpAddr, ForwardedError> {
        client_addr(
            PROXY,
            &with("forwarded", values),
            &trusted(ForwardedHeader::Forwarded),
        )
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
    fn an_ipv4_peer_of_a_dual_stack_listener_is_its_ipv4_address() {
        let mapped = |v4: &str| {
            IpAddr::V6(
                v4.parse::<std::net::Ipv4Addr>()
                    .expect("v4")
                    .to_ipv6_mapped(),
            )
        };
        // Not a proxy: the client, as an IPv4 address (allow_ips and the logs see that).
        assert_eq!(
            client(mapped("198.51.100.9"), &["10.0.0.1"]),
            Ok(ip("198.51.100.9"))
        );
        // A trusted proxy in 10.0.0.0/8 is trusted through an IPv6 socket too.
        assert_eq!(
            client(mapped("10.0.0.5"), &["203.0.113.7"]),
            Ok(ip("203.0.113.7"))
        );
        // Forwarded entries in the mapped form are compared the same way.
        assert_eq!(
            client(PROXY, &["203.0.113.7, ::ffff:10.1.2.3"]),
            Ok(ip("203.0.113.7"))
        );
        let e = client(mapped("10.0.0.5"), &["junk"]).expect_err("junk");
        assert!(e.to_string().contains("trusted proxy 10.0.0.5 "), "{e}");
    }

    #[test]
    fn only_a_trusted_peer_is_believed() {
        let outside = ip("198.51.100.9");
        assert_eq!(client(outside, &["10.0.0.1"]), Ok(outside));
        assert_eq!(
            client_addr(
                PROXY,
                &forwarded(&["203.0.113.7"]),
                &TrustedProxies::default()
            ),
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

    #[test]
    fn forwarded_for_is_read_the_same_way_from_rfc_7239_fields() {
        // The RFC's own examples, and the parameters around `for`.
        assert_eq!(
            client_7239(&["for=192.0.2.60;proto=http;by=203.0.113.43"]),
            Ok(ip("192.0.2.60"))
        );
        assert_eq!(
            client_7239(&[r#"For="[2001:db8:cafe::17]:4711""#]),
            Ok(ip("2001:db8:cafe::17"))
        );
        assert_eq!(
            client_7239(&["for=192.0.2.43, for=198.51.100.17"]),
            Ok(ip("198.51.100.17"))
        );
        // Read from the right past the trusted proxies; the client's own element is ignored.
        assert_eq!(
            client_7239(&[
                "for=198.51.100.1, for=203.0.113.7",
                "for=10.1.2.3;proto=https"
            ]),
            Ok(ip("203.0.113.7"))
        );
        // Separators inside a quoted string do not split.
        assert_eq!(
            client_7239(&[r#"for=203.0.113.7;host="a,b;c=\"d""#]),
            Ok(ip("203.0.113.7"))
        );
        assert_eq!(
            client_7239(&[r#"for="203.0.113.7:80""#]),
            Ok(ip("203.0.113.7"))
        );
        // Without the header the proxy itself is the client.
        assert_eq!(client_7239(&[]), Ok(PROXY));
    }

    #[test]
    fn a_forwarded_element_that_names_no_address_is_an_error_never_skipped() {
        for (value, entry) in [
            ("for=203.0.113.7, for=unknown", "unknown"),
            (r#"for=203.0.113.7, for="_gazonk""#, "_gazonk"),
            // Skipping these would believe the client-written element to their left.
            ("for=203.0.113.7, by=10.0.0.1", "<no for=>"),
            (r#"for=203.0.113.7, for="""#, "<no for=>"),
        ] {
            let e = client_7239(&[value]).expect_err(value);
            assert_eq!(
                e.to_string(),
                format!("Forwarded from trusted proxy 10.0.0.5 holds `{entry}`, not an IP address"),
                "{value}"
            );
        }
    }

    #[test]
    fn a_forwarded_field_off_the_grammar_is_malformed_as_a_whole() {
        for value in [
            // A client-written open quote that would swallow the element the proxy appended
            // to the same field; read leniently, `for=198.51.100.1` would be the client.
            r#"for=198.51.100.1;x=", for="[2001:db8::1]:4711""#,
            r#"for=198.51.100.1;x=", for=203.0.113.7"#,
            r#"for="203.0.113.7"#,
            "for=203.0.113.7 junk",
            r#"for="203.0.113.7"junk"#,
            "203.0.113.7",
            "for=203.0.113.7, 198.51.100.1",
            "f(r=203.0.113.7",
            "for=203.0.113.7;for=198.51.100.1",
        ] {
            let e = client_7239(&[value]).expect_err(value);
            assert!(e.to_string().contains("`<malformed>`"), "{value}: {e}");
        }
        // Empty list members and spaces around separators are fine.
        assert_eq!(
            client_7239(&[", for=198.51.100.1 ,, for=203.0.113.7 ; proto=https ;,"]),
            Ok(ip("203.0.113.7"))
        );
        assert_eq!(
            client_7239(&["for=203.0.113.7, proto=https"]).map_err(|e| e.to_string()),
            Err(
                "Forwarded from trusted proxy 10.0.0.5 holds `<no for=>`, not an IP address".into()
            )
        );
        // A malformed field left of the proxy's own field is the client's and never read.
        assert_eq!(
            client_7239(&[r#"for="198.51.100.1"#, "for=203.0.113.7"]),
            Ok(ip("203.0.113.7"))
        );
    }

    #[test]
    fn only_the_configured_header_is_read() {
        // A proxy that manages `Forwarded` passes a client-written X-Forwarded-For through.
        let spoofed = forwarded(&["203.0.113.7"]);
        let proxies = trusted(ForwardedHeader::Forwarded);
        assert_eq!(client_addr(PROXY, &spoofed, &proxies), Ok(PROXY));
        let spoofed = with("forwarded", &["for=203.0.113.7"]);
        let proxies = trusted(ForwardedHeader::XForwardedFor);
        assert_eq!(client_addr(PROXY, &spoofed, &proxies), Ok(PROXY));
    }

    proptest::proptest! {
        /// Whatever a proxy chain forwards (printable ASCII, anything else is not a header
        /// value), reading it gives an address or an error, never a panic.
        #[test]
        fn any_forwarded_value_is_read_without_a_panic(
            value in "[ -~]{0,160}",
            rfc_7239 in proptest::bool::ANY,
        ) {
            let (name, header) = if rfc_7239 {
                ("forwarded", ForwardedHeader::Forwarded)
            } else {
                ("x-forwarded-for", ForwardedHeader::XForwardedFor)
            };
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.append(name, v);
            }
            let _ = client_addr(PROXY, &h, &trusted(header));
        }
    }
}
