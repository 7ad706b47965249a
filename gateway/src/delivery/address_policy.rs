//! Which network addresses a delivery may connect to (the SSRF guard).
//!
//! A routing config is written by operators, but what a destination's host name resolves to is
//! decided by whoever controls its DNS. Without a guard, a destination (or a DNS answer that
//! changes later) could point the gateway at its own loopback services, the private network
//! behind it, or a cloud metadata endpoint that hands out credentials. So every address an http
//! destination connects to is checked HERE, after resolution and right before the connect
//! (the connector connects to exactly the addresses this resolver returns, so a second lookup
//! cannot swap them), and literal IPs in URLs are checked when the config is compiled.
//!
//! Owns the list of denied ranges and the resolver that enforces it. It must never allow a
//! denied address for a destination that did not set `allow_private_network = true`, and it
//! never weakens the check for IPv6 forms that embed an IPv4 address (mapped, NAT64, 6to4).
//! Translation prefixes whose translator can only be the operator's own (local-use NAT64,
//! SIIT's IPv4-translated form) are denied whatever they embed.

use hyper_util::client::legacy::connect::dns::Name;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Why an address is refused: the range it falls in, for the error text.
pub fn denied_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => denied_v4(v4),
        IpAddr::V6(v6) => denied_v6(v6),
    }
}

/// The denied range of a URL's host when it is a literal IP address (`[...]` for IPv6).
/// Literal IPs never reach [`GuardedResolver`]: the connector parses them itself.
pub fn literal_ip_range(url: &http::Uri) -> Option<&'static str> {
    let host = url.host()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    denied_range(bare.parse().ok()?)
}

fn denied_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let range = match (a, b, c) {
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) => "cloud metadata (169.254.169.254)",
        _ if ip == Ipv4Addr::new(100, 100, 100, 200) => "cloud metadata (100.100.100.200)",
        _ if ip.is_broadcast() => "broadcast",
        (0, _, _) => "\"this network\" (0.0.0.0/8)",
        (10, _, _) => "private (10.0.0.0/8)",
        (100, 64..=127, _) => "shared address space (100.64.0.0/10)",
        (127, _, _) => "loopback (127.0.0.0/8)",
        (169, 254, _) => "link-local (169.254.0.0/16)",
        (172, 16..=31, _) => "private (172.16.0.0/12)",
        (192, 0, 0) => "IETF protocol assignments (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 168, _) => "private (192.168.0.0/16)",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved (240.0.0.0/4)",
        _ => return None,
    };
    Some(range)
}

fn denied_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = embedded_v4(ip) {
        // Whatever the wrapper, the packet ends up at the IPv4 address.
        return denied_v4(v4);
    }
    let s = ip.segments();
    let range = match s[0] {
        _ if ip.is_unspecified() => "unspecified (::)",
        _ if ip.is_loopback() => "loopback (::1)",
        // ::/96 minus the two above: deprecated IPv4-compatible addresses.
        _ if s[..6] == [0; 6] => "IPv4-compatible (::/96)",
        // SIIT's IPv4-translated form (RFC 2765). Only a stateless translator inside the
        // operator's network makes these reach anything, so they are denied whatever IPv4
        // address they carry: checking the embedded address would trust that translator to
        // map it to the public address it names.
        _ if s[..6] == [0, 0, 0, 0, 0xffff, 0] => "IPv4-translated (::ffff:0:0/96)",
        // Local-use NAT64 (RFC 8215): the operator's own translator, and RFC 6052 lets it embed
        // the IPv4 address at any of /48../96, so which one a given address reaches cannot be
        // read from it. Unlike the well-known 64:ff9b::/96 (public NAT64 gateways, checked
        // through its embedded address), it is never the way to a public receiver.
        0x0064 if s[1..3] == [0xff9b, 0x0001] => "local-use NAT64 (64:ff9b:1::/48)",
        0xfc00..=0xfdff => "unique local (fc00::/7, incl. cloud metadata fd00:ec2::254)",
        0xfe80..=0xfebf => "link-local (fe80::/10)",
        0xfec0..=0xfeff => "site-local (fec0::/10)",
        0xff00..=0xffff => "multicast (ff00::/8)",
        0x2001 if s[1] == 0 => "Teredo (2001::/32)",
        0x2001 if s[1] == 0x0db8 => "documentation (2001:db8::/32)",
        0x0100 if s[1..4] == [0; 3] => "discard-only (100::/64)",
        _ => return None,
    };
    Some(range)
}

/// The IPv4 address an IPv6 address stands for, in the forms that reach one: IPv4-mapped
/// (`::ffff:a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) and 6to4 (`2002:AABB:CCDD::`). The local-use
/// NAT64 and IPv4-translated forms are not read here: `denied_v6` refuses them outright.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let tail = || Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail());
    }
    if s[0] == 0x2002 {
        let [hi, lo] = [s[1].to_be_bytes(), s[2].to_be_bytes()];
        return Some(Ipv4Addr::new(hi[0], hi[1], lo[0], lo[1]));
    }
    None
}

/// Whether a destination may reach private addresses; set per destination in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressPolicy {
    /// Only publicly routable addresses (the default).
    PublicOnly,
    /// Any address: `allow_private_network = true`.
    AllowPrivate,
}

impl AddressPolicy {
    /// The addresses of `host` this policy lets a connection go to, or the reason none is.
    pub fn filter(
        self,
        host: &str,
        resolved: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, io::Error> {
        let mut allowed = Vec::new();
        let mut refused = Vec::new();
        for addr in resolved {
            match (self, denied_range(addr.ip())) {
                (Self::PublicOnly, Some(range)) => refused.push(format!("{} ({range})", addr.ip())),
                _ => allowed.push(addr),
            }
        }
        if !allowed.is_empty() {
            // A mixed answer keeps only the public addresses: the connector never tries the
            // others, even when the public ones fail.
            return Ok(allowed);
        }
        let text = if refused.is_empty() {
            format!("`{host}` resolved to no address")
        } else {
            refused.dedup();
            format!(
                "`{host}` resolves only to denied addresses: {}; set `allow_private_network = \
                 true` on the destination to deliver to it",
                refused.join(", ")
            )
        };
        Err(io::Error::new(io::ErrorKind::PermissionDenied, text))
    }
}

/// The DNS resolver of http destinations: the system's resolver (getaddrinfo on tokio's
/// blocking pool), filtered by the destination's [`AddressPolicy`].
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub policy: AddressPolicy,
}

type Resolving =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, io::Error>> + Send>>;

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str();
            // Port 0: the connector sets the URL's port on every address it gets back.
            let resolved = tokio::net::lookup_host((host, 0)).await?;
            policy.filter(host, resolved).map(Vec::into_iter)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(text: &str) -> Option<&'static str> {
        denied_range(text.parse().expect("an IP address"))
    }

    #[test]
    fn internal_ranges_are_denied_and_public_ones_allowed() {
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.10.10",
            "100.64.0.1",
            "100.100.100.200",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
            "::127.0.0.1",
            "2001:db8::1",
            "2001:0:4136:e378::1",
            // Translation forms denied whatever IPv4 address they embed (public ones too).
            "::ffff:0:7f00:1",
            "::ffff:0:808:808",
            "64:ff9b:1::7f00:1",
            "64:ff9b:1:808:8:800::",
            "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
        ] {
            assert!(denied(ip).is_some(), "{ip} must be denied");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "192.169.0.1",
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::",
        ] {
            assert_eq!(denied(ip), None, "{ip} must be allowed");
        }
        assert_eq!(
            denied("169.254.169.254"),
            Some("cloud metadata (169.254.169.254)")
        );
        assert_eq!(denied("::ffff:10.0.0.1"), Some("private (10.0.0.0/8)"));
        assert_eq!(
            denied("::ffff:0:808:808"),
            Some("IPv4-translated (::ffff:0:0/96)")
        );
        assert_eq!(
            denied("64:ff9b:1:808:8:800::"),
            Some("local-use NAT64 (64:ff9b:1::/48)")
        );
    }

    #[test]
    fn a_mixed_answer_keeps_only_public_addresses() {
        let addrs: Vec<SocketAddr> = ["10.0.0.1:0", "93.184.215.14:0", "127.0.0.1:0"]
            .iter()
            .map(|a| a.parse().expect("socket address"))
            .collect();
        let kept = AddressPolicy::PublicOnly
            .filter("h", addrs.clone())
            .expect("one public address");
        assert_eq!(kept, vec![addrs[1]]);
        let all = AddressPolicy::AllowPrivate
            .filter("h", addrs.clone())
            .expect("everything allowed");
        assert_eq!(all, addrs);
    }

    #[test]
    fn only_denied_addresses_is_an_error_naming_them_and_the_way_out() {
        let addrs = ["127.0.0.1:0".parse().expect("socket address")];
        let err = AddressPolicy::PublicOnly
            .filter("localhost", addrs)
            .expect_err("loopback refused");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(
            err.to_string(),
            "`localhost` resolves only to denied addresses: 127.0.0.1 (loopback \
             (127.0.0.0/8)); set `allow_private_network = true` on the destination to deliver \
             to it"
        );
    }

    #[tokio::test]
    async fn the_resolver_refuses_localhost_unless_allowed() {
        use tower_service::Service as _;
        let name = |s: &str| s.parse::<Name>().expect("a host name");
        let mut guarded = GuardedResolver {
            policy: AddressPolicy::PublicOnly,
        };
        let err = guarded
            .call(name("localhost"))
            .await
            .expect_err("localhost is loopback");
        assert!(err.to_string().contains("denied addresses"), "{err}");
        let mut open = GuardedResolver {
            policy: AddressPolicy::AllowPrivate,
        };
        let addrs: Vec<_> = open
            .call(name("localhost"))
            .await
            .expect("allowed")
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
