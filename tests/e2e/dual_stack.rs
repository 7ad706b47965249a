//! A dual-stack listener (`listen = "[::]:0"`) sees its IPv4 clients as `::ffff:a.b.c.d`; they
//! are compared as the IPv4 addresses they are: `allow_ips = ["127.0.0.1/32"]` lets a client on
//! 127.0.0.1 in, `trusted_proxies = ["127.0.0.1/32"]` trusts a proxy there, networks written in
//! the mapped form match too, and the logs name the IPv4 address.

use crate::harness::*;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

fn dual_stack_gateway() -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("gateway.db");
    let text = config_with_server(
        &db,
        &Settings::default(),
        "trusted_proxies = [\"127.0.0.1/32\"]",
    )
    .replace("listen = \"127.0.0.1:0\"", "listen = \"[::]:0\"");
    let extra = "
[sources.ledig-partner]
provider = \"ledig\"
allow_ips = [\"203.0.113.0/24\"]

[sources.ledig-mapped]
provider = \"ledig\"
allow_ips = [\"::ffff:127.0.0.0/104\"]
";
    std::fs::write(dir.path().join("gateway.toml"), format!("{text}{extra}")).expect("config");
    Gateway::start_in(dir, db)
}

#[test]
fn ipv4_clients_of_a_dual_stack_listener_match_ipv4_allow_lists_and_trusted_proxies() {
    let gw = dual_stack_gateway();
    assert!(
        gw.addr.ip().is_unspecified() && gw.addr.is_ipv6(),
        "{}",
        gw.addr
    );
    let over_v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, gw.addr.port()));
    let over_v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, gw.addr.port()));
    let post = |addr, path: &str, headers: &[(&str, String)], id: &str| {
        let body =
            format!(r#"{{"event":"crypto_received","data":{{"id":"{id}","status":"completed"}}}}"#);
        request(addr, "POST", path, headers, body.as_bytes())
    };
    let token = [("X-Ledig-Token", LEDIG_TOKEN.to_owned())];

    // allow_ips = ["127.0.0.1/32"], the client on 127.0.0.1 (seen as ::ffff:127.0.0.1).
    post(over_v4, "/webhooks/ledig-local", &token, "dep_v4").assert_accepted();
    // An IPv6 client is compared as the IPv6 address it is.
    post(over_v6, "/webhooks/ledig-local", &token, "dep_v6").assert_error(401);
    // A network written in the mapped form is the IPv4 network 127.0.0.0/8.
    post(over_v4, "/webhooks/ledig-mapped", &[], "dep_mapped").assert_accepted();

    // 127.0.0.1 is a trusted proxy: the client it forwards is checked.
    let via = |client: &str| [("X-Forwarded-For", client.to_owned())];
    post(
        over_v4,
        "/webhooks/ledig-partner",
        &via("203.0.113.7"),
        "dep_proxy",
    )
    .assert_accepted();
    post(
        over_v4,
        "/webhooks/ledig-partner",
        &via("198.51.100.1"),
        "dep_out",
    )
    .assert_error(401);
    // Not a trusted proxy over IPv6 (::1): its header is nobody's word.
    post(
        over_v6,
        "/webhooks/ledig-partner",
        &via("203.0.113.7"),
        "dep_v6p",
    )
    .assert_error(401);
    assert_eq!(count(&gw.db(), "SELECT count(*) FROM events"), 3);

    // The refusals name the client as the IPv4 address.
    let wrong = [("X-Ledig-Token", "wrong".to_owned())];
    post(over_v4, "/webhooks/ledig-local", &wrong, "dep_wrong").assert_error(401);
    let refused = gw.log_lines("webhook rejected");
    assert!(
        refused.iter().any(|l| l.contains("peer=198.51.100.1")),
        "{refused:#?}"
    );
    assert!(
        refused.iter().any(|l| l.contains("peer=127.0.0.1 ")),
        "{refused:#?}"
    );
    assert!(!gw.stderr().contains("::ffff:"), "{}", gw.stderr());
}
