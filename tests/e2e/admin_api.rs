//! The admin API, over real HTTP against the real binary: bearer authentication (401 with the
//! documented JSON otherwise, 404 for every path when `[admin]` is not configured), event
//! listings filtered by source, type, status and time and paged newest first with exact seqs and
//! ids, the detail of one event, replays that make new deliveries through the routes in force
//! (same `webhook-id`), and a plugin that traps on one event: that event is a dead letter with
//! the trap as its reason, the events around it are delivered.

use crate::harness::*;
use crate::plugin_harness::CACHE_DIR;
use crate::reload::{
    ADMIN, GENERATION, full_config, http_destination, ledger_txn, wait_delivered, wait_metric,
    write_atomic,
};
use crate::sink::{Mode, SINK_SECRET, Sink, verify};
use plugin_artifacts::STATEFUL;
use serde_json::Value;
use std::collections::HashSet;
use std::io::Read as _;
use std::time::{Duration, Instant};

/// A `200` admin answer with a JSON content type, parsed.
fn admin_ok(gw: &Gateway, method: &str, path: &str) -> Value {
    let r = gw.admin(method, path);
    assert_eq!(r.status, 200, "{method} {path}: {}", r.body);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{method} {path}: content-type {:?}",
        r.header("content-type")
    );
    r.json()
}

/// `GET /admin/events?query`: the seqs listed and `next_before`.
fn list(gw: &Gateway, query: &str) -> (Vec<i64>, Option<i64>) {
    let v = admin_ok(gw, "GET", &format!("/admin/events?{query}"));
    let seqs = v["events"]
        .as_array()
        .unwrap_or_else(|| panic!("`events` is an array: {v}"))
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq is an integer"))
        .collect();
    let next = match &v["next_before"] {
        Value::Null => None,
        n => Some(n.as_i64().unwrap_or_else(|| panic!("next_before: {v}"))),
    };
    (seqs, next)
}

/// Polls `GET /admin/events/{seq}` until `done` holds for the detail; returns it.
fn wait_event(gw: &Gateway, seq: i64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let v = admin_ok(gw, "GET", &format!("/admin/events/{seq}"));
        if done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "event {seq}: {what} did not happen within {PATIENCE:?}: {v}\nstderr:\n{}",
            gw.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// a) Authentication.
// ---------------------------------------------------------------------------------------------

/// 401 with exactly `{"ok":false,"error":"..."}`, `ok` first.
fn assert_unauthorized(r: &Response, what: &str) {
    r.assert_error(401);
    assert!(
        r.body.starts_with(r#"{"ok":false,"error":"#),
        "{what}: `ok` comes first: {}",
        r.body
    );
}

#[test]
fn admin_requests_need_the_bearer_token() {
    let gw = Gateway::start_with_extra(ADMIN);
    gw.post_ledger(&ledger_txn("evt_auth_1")).assert_accepted();
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let refused: [(&str, Vec<(&str, String)>); 6] = [
        ("no Authorization header", vec![]),
        (
            "a wrong bearer token",
            vec![("Authorization", "Bearer admin-e2e-token-WRONG".into())],
        ),
        (
            "the token with one character less",
            vec![(
                "Authorization",
                format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]),
            )],
        ),
        (
            "Basic with the token as password",
            vec![(
                "Authorization",
                format!("Basic {}", b64(&format!("admin:{ADMIN_TOKEN}"))),
            )],
        ),
        (
            "Basic with the bare token",
            vec![("Authorization", format!("Basic {ADMIN_TOKEN}"))],
        ),
        (
            "the token without a scheme",
            vec![("Authorization", ADMIN_TOKEN.into())],
        ),
    ];
    for (what, headers) in &refused {
        for (method, path) in [
            ("GET", "/admin/events"),
            ("GET", "/admin/events/1"),
            ("GET", "/admin/dead-letters"),
            ("GET", "/admin/plugins"),
            ("POST", "/admin/events/1/replay"),
            ("POST", "/admin/replay?all=true"),
            ("POST", "/admin/dead-letters/redrive"),
            ("GET", "/admin/no-such-endpoint"),
        ] {
            let r = gw.request(method, path, headers, b"");
            assert_unauthorized(&r, &format!("{what}: {method} {path}"));
        }
    }
    // Every refusal is counted by what it would have done and logged with the client.
    let m = gw.metrics();
    let admin = |action: &str, result: &str| {
        metric(
            &m,
            &format!(r#"gateway_admin_requests_total{{action="{action}",result="{result}"}}"#),
        )
    };
    assert_eq!(
        (
            admin("read", "unauthorized"),
            admin("replay", "unauthorized"),
            admin("redrive", "unauthorized"),
            admin("read", "ok"),
        ),
        (30.0, 12.0, 6.0, 0.0)
    );
    // Refusal lines are rate-limited (the first 5 per action and 10 s, then a summary line):
    // each action guessed at shows up, with the client.
    let refusals: Vec<String> = gw
        .log_lines("admin request refused")
        .into_iter()
        .filter(|l| !l.contains("suppressed="))
        .collect();
    assert!((15..=48).contains(&refusals.len()), "{}", gw.stderr());
    assert!(
        refusals.iter().all(|l| l.contains("client=127.0.0.1")),
        "{refusals:?}"
    );

    // Nothing was replayed by the refused requests, and the right token is let in.
    let listed = admin_ok(&gw, "GET", "/admin/events");
    assert_eq!(listed["events"][0]["id"], "evt_auth_1", "{listed}");
    assert_ne!(listed["events"][0]["status"], "replay", "{listed}");
    gw.admin("GET", "/admin/no-such-endpoint").assert_error(404);

    // Without [admin], every /admin/ path is 404, whatever the token.
    let plain = Gateway::start();
    for (method, path) in [
        ("GET", "/admin/events"),
        ("GET", "/admin/events/1"),
        ("POST", "/admin/replay?all=true"),
        ("GET", "/admin"),
    ] {
        plain.admin(method, path).assert_error(404);
        plain.request(method, path, &[], b"").assert_error(404);
    }
}

/// The scheme name is case-insensitive (RFC 9110, 11.1); the token after it is not, and
/// something that only starts like the scheme is not it.
#[test]
fn the_bearer_scheme_is_accepted_in_any_case() {
    let gw = Gateway::start_with_extra(ADMIN);
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let auth = ("Authorization", format!("{scheme} {ADMIN_TOKEN}"));
        let r = gw.request("GET", "/admin/events", &[auth], b"");
        assert_eq!(r.status, 200, "{scheme}: {}", r.body);
    }
    for (what, value) in [
        (
            "lower-case scheme, wrong token",
            "bearer admin-e2e-token-WRONG".to_owned(),
        ),
        (
            "the token in upper case",
            format!("Bearer {}", ADMIN_TOKEN.to_uppercase()),
        ),
        (
            "a scheme that only starts with Bearer",
            format!("Bearerx {ADMIN_TOKEN}"),
        ),
        ("no space after the scheme", format!("bearer{ADMIN_TOKEN}")),
    ] {
        let r = gw.request("GET", "/admin/events", &[("Authorization", value)], b"");
        assert_unauthorized(&r, what);
    }
}

// ---------------------------------------------------------------------------------------------
// b) Listing: filters and pages.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Sent {
    seq: i64,
    id: String,
    source: &'static str,
    event_type: String,
    status: &'static str,
    received_at: i64,
}

#[test]
fn events_are_listed_by_source_type_status_and_time_and_paged_newest_first() {
    let sink = Sink::start(Mode::Ok);
    let gw = Gateway::start_with_extra(&format!(
        "{ADMIN}{}[[routes]]\nname = \"txns\"\nmatch = {{ type = [\"ledger.transaction.*\"] }}\n\
         to = [\"sink\"]\n",
        http_destination("sink", &sink)
    ));
    // (source, fixture, envelope type); transactions are routed, the rest unrouted.
    let plan: [(&str, &str, &str); 9] = [
        (
            "ledger",
            "ledger/transaction.completed",
            "ledger.transaction.completed",
        ),
        ("ledger", "ledger/wallet.created", "ledger.wallet.created"),
        ("ledig", "ledig/crypto_received", "ledig.crypto_received"),
        (
            "ledger",
            "ledger/transaction.created",
            "ledger.transaction.created",
        ),
        (
            "ledger",
            "ledger/customer.created",
            "ledger.customer.created",
        ),
        // -- a pause here: the rest arrive strictly later --
        (
            "ledig",
            "ledig/virtual_account_credited",
            "ledig.virtual_account_credited",
        ),
        (
            "ledger",
            "ledger/transaction.updated",
            "ledger.transaction.updated",
        ),
        ("ledig", "ledig/admin_funding", "ledig.admin_funding"),
        ("ledger", "ledger/card.created", "ledger.card.created"),
    ];
    let mut sent: Vec<Sent> = Vec::new();
    for (i, (source, file, event_type)) in plan.iter().enumerate() {
        if i == 5 {
            // Only separates the two groups' arrival times; nothing is asserted on timing.
            std::thread::sleep(Duration::from_millis(30));
        }
        let body = fixture(&format!("{file}.json"));
        match *source {
            "ledger" => gw.post_ledger(&body).assert_accepted(),
            _ => gw.post_ledig(&body).assert_accepted(),
        }
        let row = stored_by_type(&gw.db(), source, event_type);
        if *source == "ledger" {
            let v: Value = serde_json::from_slice(&body).expect("fixture is JSON");
            assert_eq!(row.dedup_key, v["id"].as_str().expect("ledger id"));
        }
        sent.push(Sent {
            seq: seq_of(&gw, source, &row.dedup_key),
            id: row.dedup_key,
            source,
            event_type: (*event_type).to_owned(),
            status: if event_type.starts_with("ledger.transaction.") {
                "routed"
            } else {
                "unrouted"
            },
            received_at: row.received_at,
        });
    }
    let seqs: Vec<i64> = sent.iter().map(|s| s.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "arrival order: {seqs:?}"
    );

    // Wait until every event is routed; then the full listing is exact, newest first.
    let deadline = Instant::now() + PATIENCE;
    while !list(&gw, "status=pending").0.is_empty() {
        assert!(Instant::now() < deadline, "events still pending");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut all = admin_ok(&gw, "GET", "/admin/events");
    // The payload's amount and currency (for the console) are shown where it has them; the
    // fixture's Ledger transaction says "amount": "5.0", "sourceCurrency": "usdc".
    let listed = all["events"].as_array_mut().expect("events");
    let update = listed
        .iter()
        .find(|e| e["id"] == "evt_fx_03_transaction_updated")
        .expect("the Ledger update is listed");
    assert_eq!(
        (&update["amount"], &update["currency"]),
        (&Value::from("5.0"), &Value::from("USDC"))
    );
    for e in listed.iter_mut().filter_map(Value::as_object_mut) {
        e.remove("amount");
        e.remove("currency");
    }
    let expected: Vec<Value> = sent
        .iter()
        .rev()
        .map(|s| {
            serde_json::json!({"seq": s.seq, "id": s.id, "source": s.source,
                "type": s.event_type, "status": s.status, "received_at": s.received_at})
        })
        .collect();
    assert_eq!(all["events"], Value::Array(expected), "{all}");
    assert_eq!(all["next_before"], Value::Null, "{all}");

    let newest_first = |pick: &dyn Fn(&Sent) -> bool| -> Vec<i64> {
        sent.iter()
            .rev()
            .filter(|s| pick(s))
            .map(|s| s.seq)
            .collect()
    };
    let cases: Vec<(String, Vec<i64>)> = vec![
        (
            "source=ledger".into(),
            newest_first(&|s| s.source == "ledger"),
        ),
        (
            "source=ledig".into(),
            newest_first(&|s| s.source == "ledig"),
        ),
        ("source=ledger-std".into(), vec![]),
        (
            "type=ledger.transaction.completed".into(),
            vec![sent[0].seq],
        ),
        ("type=ledig.crypto_received".into(), vec![sent[2].seq]),
        // A type glob: `*` stands for any run of characters.
        (
            "type=ledger.transaction.*".into(),
            newest_first(&|s| s.event_type.starts_with("ledger.transaction.")),
        ),
        ("type=*.nothing".into(), vec![]),
        // The provider's event id.
        (format!("id={}", sent[2].id), vec![sent[2].seq]),
        ("id=evt_nobody".into(), vec![]),
        // The subject, exactly: the fixtures' completed and updated are about one transaction.
        ("subject=txn_7d2e01".into(), vec![sent[6].seq, sent[0].seq]),
        ("subject=txn_7d2e0".into(), vec![]),
        (
            "subject=txn_7d2e01&type=ledger.transaction.updated".into(),
            vec![sent[6].seq],
        ),
        (
            "status=routed".into(),
            newest_first(&|s| s.status == "routed"),
        ),
        (
            "status=unrouted".into(),
            newest_first(&|s| s.status == "unrouted"),
        ),
        ("status=failed".into(), vec![]),
        (
            "source=ledger&status=unrouted".into(),
            newest_first(&|s| s.source == "ledger" && s.status == "unrouted"),
        ),
        (
            "source=ledig&type=ledig.admin_funding&status=unrouted".into(),
            vec![sent[7].seq],
        ),
    ];
    for (query, want) in &cases {
        assert!(
            want.len() < sent.len(),
            "{query}: a filter that selects a proper subset"
        );
        assert_eq!(&list(&gw, query).0, want, "GET /admin/events?{query}");
    }

    // Time: `since` is inclusive, `until` exclusive; unix ms or RFC 3339.
    let t2 = sent[5].received_at;
    assert!(
        sent[4].received_at < t2,
        "the pause separates the groups: {sent:?}"
    );
    let group2 = newest_first(&|s| s.received_at >= t2);
    let group1 = newest_first(&|s| s.received_at < t2);
    assert_eq!(group2, newest_first(&|s| s.seq >= sent[5].seq));
    assert_eq!(list(&gw, &format!("since={t2}")).0, group2);
    assert_eq!(list(&gw, &format!("until={t2}")).0, group1);
    let rfc = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t2) * 1_000_000)
        .expect("a valid time")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format RFC 3339");
    assert_eq!(list(&gw, &format!("since={rfc}")).0, group2, "since={rfc}");
    let t_last = sent[8].received_at;
    assert_eq!(
        list(&gw, &format!("since={t2}&until={t_last}&source=ledger")).0,
        newest_first(&|s| s.received_at >= t2 && s.received_at < t_last && s.source == "ledger")
    );

    // Pages of 4, newest first, following next_before until it is null.
    let mut pages = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let query = match before {
            Some(b) => format!("limit=4&before={b}"),
            None => "limit=4".to_owned(),
        };
        let (page, next) = list(&gw, &query);
        pages.push(page);
        match next {
            Some(n) => before = Some(n),
            None => break,
        }
        assert!(pages.len() < 10, "paging does not end: {pages:?}");
    }
    let desc: Vec<i64> = seqs.iter().rev().copied().collect();
    assert_eq!(
        pages,
        vec![desc[0..4].to_vec(), desc[4..8].to_vec(), desc[8..].to_vec()]
    );
    assert_eq!(
        list(&gw, "limit=4").1,
        Some(desc[3]),
        "next_before = last seq"
    );
    // Pages combine with filters.
    let ledger = newest_first(&|s| s.source == "ledger");
    let (p1, n1) = list(&gw, "source=ledger&limit=2");
    assert_eq!((p1.as_slice(), n1), (&ledger[0..2], Some(ledger[1])));
    let (p2, n2) = list(&gw, &format!("source=ledger&limit=2&before={}", ledger[1]));
    assert_eq!((p2.as_slice(), n2), (&ledger[2..4], Some(ledger[3])));

    // Bad queries are 400, never a wider listing.
    for query in [
        "sorce=ledger",
        "source=ledger&token=x",
        "status=bogus",
        "limit=0",
        "limit=1001",
        "limit=ten",
        "since=yesterday",
        "before=x",
        "source=ledger&source=ledig",
    ] {
        gw.admin("GET", &format!("/admin/events?{query}"))
            .assert_error(400);
    }
    // One event by seq: its envelope as stored, and a 404 for one that does not exist.
    let one = admin_ok(&gw, "GET", &format!("/admin/events/{}", sent[0].seq));
    assert_eq!(one["seq"], sent[0].seq);
    assert_eq!(one["id"], sent[0].id.as_str());
    assert_eq!(one["envelope"]["id"], sent[0].id.as_str());
    assert_eq!(one["envelope"]["type"], "ledger.transaction.completed");
    assert_eq!(one["status"], "routed");
    assert_eq!(one["deliveries"].as_array().map(Vec::len), Some(1), "{one}");
    gw.admin("GET", "/admin/events/999999").assert_error(404);
    gw.admin("GET", "/admin/events/abc").assert_error(404);
}

// ---------------------------------------------------------------------------------------------
// c) Replay.
// ---------------------------------------------------------------------------------------------

/// A TCP server that accepts connections and never answers: a delivery to it hangs until the
/// destination's timeout, so the event it belongs to stays `pending` meanwhile.
fn black_hole() -> (String, std::sync::mpsc::Receiver<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            // Read the request so the gateway is certainly waiting for an answer.
            let mut buf = [0u8; 4096];
            drop(stream.read(&mut buf));
            let _ = tx.send(());
            held.push(stream);
        }
    });
    (url, rx)
}

fn replay_routes(first_to: &str, blackhole: &str) -> String {
    format!(
        "[[routes]]\nname = \"txns\"\nmatch = {{ type = [\"ledger.transaction.*\"] }}\n\
         to = [{first_to}]\n\n[[routes]]\nname = \"wallets\"\n\
         match = {{ type = [\"ledger.wallet.*\"] }}\nto = [\"{blackhole}\"]\n"
    )
}

#[test]
fn a_replay_delivers_again_with_the_same_webhook_id_through_the_current_routes() {
    let sink = Sink::start(Mode::Ok);
    let second = Sink::start(Mode::Ok);
    let (hole_url, hole_hit) = black_hole();
    let destinations = format!(
        "{ADMIN}{}{}[destinations.hole]\nhttp = \"{hole_url}\"\nsecret = \"env:E2E_SINK_SECRET\"\n\
         allow_private_network = true\ntimeout = \"5m\"\n\n",
        http_destination("sink", &sink),
        http_destination("second", &second),
    );
    let gw = Gateway::start_with_extra(&format!(
        "{destinations}{}",
        replay_routes("\"sink\"", "hole")
    ));

    // Delivered once.
    gw.post_ledger(&ledger_txn("evt_replay_1"))
        .assert_accepted();
    let seq = seq_of(&gw, "ledger", "evt_replay_1");
    let once = HashSet::from(["evt_replay_1".to_owned()]);
    wait_delivered(&sink, &once, "the first delivery", &gw);
    wait_event(&gw, seq, "routed", |v| v["status"] == "routed");

    // Replayed: 202, and a second delivery with the same webhook-id.
    let r = gw.admin("POST", &format!("/admin/events/{seq}/replay"));
    assert_eq!(
        (r.status, r.body.as_str()),
        (202, r#"{"ok":true,"replayed":1}"#)
    );
    // The audit trail: who made which events go out again.
    let audit = gw.log_lines("admin action");
    assert_eq!(audit.len(), 1, "{}", gw.stderr());
    for part in [
        "replay",
        &format!("event {seq}"),
        "count=1",
        "client=127.0.0.1",
    ] {
        assert!(audit[0].contains(part), "{part} in {}", audit[0]);
    }
    let replays = r#"gateway_admin_requests_total{action="replay",result="ok"}"#;
    assert_eq!(metric(&gw.metrics(), replays), 1.0);
    sink.wait_for(PATIENCE, "the replayed delivery", |got| got.len() >= 2);
    let detail = wait_event(&gw, seq, "two deliveries, routed", |v| {
        v["status"] == "routed" && v["deliveries"].as_array().is_some_and(|d| d.len() == 2)
    });
    let got = sink.received();
    assert_eq!(got.len(), 2, "exactly one more delivery");
    for r in &got {
        assert_eq!(r.webhook_id.as_deref(), Some("ledger:evt_replay_1"));
        assert_eq!(r.answered, 200);
        assert!(verify(SINK_SECRET, r), "signed");
        assert_eq!(r.json()["id"], "evt_replay_1");
    }
    assert_eq!(got[0].body, got[1].body, "the same envelope is sent again");
    let deliveries = detail["deliveries"].as_array().expect("deliveries");
    assert_ne!(
        deliveries[0]["id"], deliveries[1]["id"],
        "a new delivery row"
    );
    for d in deliveries {
        assert_eq!(d["webhook_id"], "ledger:evt_replay_1", "{d}");
        assert_eq!(d["destination"], "sink", "{d}");
        assert_eq!(d["route"], "txns", "{d}");
        assert_eq!(d["status"], "delivered", "{d}");
        assert_eq!(d["attempts"], 1, "{d}");
        assert_eq!(d["history"].as_array().map(Vec::len), Some(1), "{d}");
        assert_eq!(d["history"][0]["status"], 200, "{d}");
    }

    // An event that is not routed yet (its first delivery hangs) cannot be replayed: 409.
    gw.post_ledger(&fixture("ledger/wallet.created.json"))
        .assert_accepted();
    let pending = seq_of(&gw, "ledger", "evt_fx_05_wallet_created");
    hole_hit
        .recv_timeout(PATIENCE)
        .expect("the wallet event's delivery reached the black hole");
    assert_eq!(
        admin_ok(&gw, "GET", &format!("/admin/events/{pending}"))["status"],
        "pending"
    );
    gw.admin("POST", &format!("/admin/events/{pending}/replay"))
        .assert_error(409);
    // Missing events: 404.
    gw.admin("POST", "/admin/events/999999/replay")
        .assert_error(404);
    gw.admin("POST", "/admin/events/0/replay").assert_error(404);
    gw.admin("POST", "/admin/events/abc/replay")
        .assert_error(404);
    gw.admin("GET", &format!("/admin/events/{seq}/replay"))
        .assert_error(405);

    // A filtered replay needs a filter; an unknown parameter is refused.
    gw.admin("POST", "/admin/replay").assert_error(400);
    gw.admin("POST", "/admin/replay?all=false")
        .assert_error(400);
    gw.admin("POST", "/admin/replay?tpye=ledger.transaction.created")
        .assert_error(400);
    assert_eq!(
        sink.received().len(),
        2,
        "no refused replay delivered anything"
    );

    // The routes change (reload): the txns route now also leads to `second`. A replay by type
    // takes the CURRENT routes: the sink gets a third copy, `second` its first.
    let path = gw.dir().join("gateway.toml");
    write_atomic(
        &path,
        &full_config(
            &gw.db,
            &format!(
                "{destinations}{}",
                replay_routes("\"sink\", \"second\"", "hole")
            ),
        ),
    );
    wait_metric(&gw, GENERATION, 2.0);
    let r = gw.admin("POST", "/admin/replay?type=ledger.transaction.created");
    assert_eq!(
        (r.status, r.body.as_str()),
        (202, r#"{"ok":true,"replayed":1}"#)
    );
    wait_delivered(&second, &once, "the replay through the new route", &gw);
    sink.wait_for(PATIENCE, "the third copy", |got| got.len() >= 3);
    let detail = wait_event(&gw, seq, "four deliveries, routed", |v| {
        v["status"] == "routed" && v["deliveries"].as_array().is_some_and(|d| d.len() == 4)
    });
    let mut to: Vec<&str> = detail["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| d["destination"].as_str().expect("destination"))
        .collect();
    to.sort_unstable();
    assert_eq!(to, ["second", "sink", "sink", "sink"], "{detail}");
    assert_eq!(second.received().len(), 1);
    assert_eq!(
        second.received()[0].webhook_id.as_deref(),
        Some("ledger:evt_replay_1")
    );
    assert!(verify(SINK_SECRET, &second.received()[0]));
    assert_eq!(
        admin_ok(&gw, "GET", &format!("/admin/events/{pending}"))["status"],
        "pending",
        "the filtered replay left the wallet event alone"
    );
}

// ---------------------------------------------------------------------------------------------
// d) A poison event.
// ---------------------------------------------------------------------------------------------

/// A replay of everything needs `all=true`, however the filter is spelled (issue 20): a time
/// or seq bound that excludes no stored event (`since=0`, `until` or `before` far ahead) is
/// refused like no filter at all, and nothing is marked; a bound that excludes a stored event,
/// or a source, type or status, narrows.
#[test]
fn a_replay_of_everything_needs_all_true_however_the_filter_is_spelled() {
    let gw = Gateway::start_with_extra(ADMIN);
    for id in ["evt_wide_1", "evt_wide_2", "evt_wide_3"] {
        gw.post_ledger(&ledger_txn(id)).assert_accepted();
    }
    let db = gw.db();
    // No route: every event ends `unrouted`, which a replay may select.
    let settled = || {
        count(
            &db,
            "SELECT count(*) FROM event_states WHERE status IN ('pending', 'replay')",
        ) == 0
    };
    wait_until(&gw, "every event is routed", || settled().then_some(()));
    let (oldest_at, newest_seq, newest_at): (i64, i64, i64) = db
        .query_row(
            "SELECT min(received_at), max(seq), max(received_at) FROM events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("stored span");
    let far = 9_999_999_999_999_i64;
    for query in [
        String::new(),
        "limit=10".to_owned(),
        "since=0".to_owned(),
        "since=-1".to_owned(),
        "since=1970-01-01T00:00:00Z".to_owned(),
        format!("since={oldest_at}"),
        format!("until={far}"),
        format!("until={}", newest_at + 1),
        format!("before={far}"),
        format!("before={}", newest_seq + 1),
        format!("since=0&until={far}&before={far}"),
        "all=false&since=0".to_owned(),
    ] {
        let r = gw.admin("POST", &format!("/admin/replay?{query}"));
        r.assert_error(400);
        assert!(
            r.json()["error"]
                .as_str()
                .is_some_and(|e| e.contains("all=true")),
            "{query}: {}",
            r.body
        );
        assert!(settled(), "{query}: a refused replay marked events");
    }
    let r = gw.admin("POST", "/admin/replay?all=yes");
    r.assert_error(400);
    assert_eq!(
        r.json()["error"],
        "`all` must be true or false",
        "{}",
        r.body
    );

    // Bounds that exclude a stored event narrow; source, type and status always do.
    let replayed = |query: &str| {
        wait_until(&gw, "the last replay is routed again", || {
            settled().then_some(())
        });
        let r = gw.admin("POST", &format!("/admin/replay?{query}"));
        assert_eq!(r.status, 202, "{query}: {}", r.body);
        r.json()["replayed"].as_i64().expect("replayed count")
    };
    assert_eq!(replayed(&format!("before={newest_seq}")), 2);
    assert_eq!(replayed(&format!("before={newest_seq}&since=0")), 2);
    assert!(replayed(&format!("until={newest_at}")) <= 2);
    assert!(replayed(&format!("since={}", oldest_at + 1)) <= 2);
    assert_eq!(replayed("source=ledger"), 3);
    assert_eq!(replayed("status=unrouted"), 3);
    assert_eq!(replayed("since=0&all=true"), 3);
    assert_eq!(replayed("all=true"), 3);
}

pub(crate) fn ledger_with_data(id: &str, data: &str) -> Vec<u8> {
    format!(
        r#"{{"id":"{id}","type":"transaction.created","createdAt":1763856000000,"data":{data}}}"#
    )
    .into_bytes()
}

#[test]
fn a_plugin_trap_dead_letters_that_event_only() {
    let sink = Sink::start(Mode::Ok);
    let gw = Gateway::start_with_extra(&format!(
        "{ADMIN}[wasm]\ncache_dir = \"{CACHE_DIR}\"\n\n[plugins.stateful]\nwasm = \"{STATEFUL}\"\n\
         mode = \"fresh\"\ntimeout = \"1s\"\n\n{}[[routes]]\nname = \"counted\"\n\
         match = {{ type = [\"ledger.transaction.*\"] }}\nplugins = [\"stateful\"]\nto = [\"sink\"]\n",
        http_destination("sink", &sink)
    ));
    let ids: Vec<String> = (1..=7).map(|i| format!("evt_poison_{i}")).collect();
    let poison = &ids[3];
    for id in &ids {
        let body = if id == poison {
            ledger_with_data(id, r#"{"poison":true}"#)
        } else {
            ledger_with_data(id, &format!(r#"{{"id":"txn_{id}","amount":"2.00"}}"#))
        };
        gw.post_ledger(&body).assert_accepted();
    }
    let poison_seq = seq_of(&gw, "ledger", poison);

    // The poison event fails for good...
    let detail = wait_event(&gw, poison_seq, "failed", |v| v["status"] == "failed");
    let runs = detail["route_runs"].as_array().expect("route_runs");
    assert_eq!(runs.len(), 1, "{detail}");
    assert_eq!(runs[0]["status"], "dead", "{detail}");
    assert_eq!(runs[0]["route"], "counted", "{detail}");
    let reason = runs[0]["reason"].as_str().expect("reason");
    assert!(
        reason.contains("stateful") && reason.contains("trap"),
        "the reason names the plugin and the trap: {reason}"
    );
    assert!(
        reason.contains("poisoned on call 1"),
        "the panic message, on a fresh instance: {reason}"
    );
    assert_eq!(detail["deliveries"], Value::Array(vec![]), "{detail}");
    assert_eq!(detail["plugin_results"][0]["result"], "trap", "{detail}");

    // ... every event before and after it is delivered, each by a fresh instance.
    let good: HashSet<String> = ids.iter().filter(|id| *id != poison).cloned().collect();
    let got = wait_delivered(&sink, &good, "the events around the poison", &gw);
    assert_eq!(
        got.len(),
        good.len(),
        "one delivery each, none for the poison"
    );
    for r in &got {
        let v = r.json();
        assert!(verify(SINK_SECRET, r), "signed");
        assert_eq!(v["calls"], "1", "a fresh instance per event: {v}");
        assert_ne!(r.event_id(), Some(poison.as_str()));
    }
    for id in &good {
        let seq = seq_of(&gw, "ledger", id);
        wait_event(&gw, seq, "routed", |v| v["status"] == "routed");
    }

    // The store and the dead-letter listing agree.
    let conn = gw.db();
    let (status, dead_reason): (String, String) = conn
        .query_row(
            "SELECT status, reason FROM route_runs WHERE event_seq = ?1",
            [poison_seq],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("one route run for the poison event");
    assert_eq!((status.as_str(), dead_reason.as_str()), ("dead", reason));
    assert_eq!(count(&conn, "SELECT count(*) FROM route_runs"), 1);
    let dead = admin_ok(&gw, "GET", "/admin/dead-letters");
    assert_eq!(dead["deliveries"], Value::Array(vec![]), "{dead}");
    let listed = dead["route_runs"].as_array().expect("route_runs");
    assert_eq!(listed.len(), 1, "{dead}");
    assert_eq!(listed[0]["event_seq"], poison_seq, "{dead}");
    assert_eq!(listed[0]["status"], "dead", "{dead}");
    assert_eq!(listed[0]["reason"], reason, "{dead}");
    assert_eq!(list(&gw, "status=failed").0, vec![poison_seq]);

    let m = gw.metrics();
    assert_eq!(
        metric(
            &m,
            r#"gateway_plugin_calls_total{plugin="stateful",result="trap"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            r#"gateway_plugin_calls_total{plugin="stateful",result="pass"}"#
        ),
        6.0
    );
}

/// Authenticated bodies that are not JSON are quarantined (400) and shown by
/// `GET /admin/quarantine`: newest first, by source, paged, with the reason, the kept headers
/// and the body byte for byte (text when UTF-8, always base64); one by id; parameters that do
/// not apply are refused, not ignored.
#[test]
fn quarantined_bodies_are_listed_and_shown_byte_for_byte() {
    let gw = Gateway::start_with_extra(ADMIN);
    let text = b"{\"id\":\"evt_q1\",\"type\":\"transaction.created\"".to_vec();
    let binary = vec![0xff, 0xfe, 0x00, b'{', 0x80];
    for body in [&text, &binary] {
        gw.post_ledger(body).assert_error(400);
    }
    gw.post_ledig(b"not json at all").assert_error(400);

    let all = admin_ok(&gw, "GET", "/admin/quarantine");
    let entries = all["quarantine"].as_array().expect("an array");
    let sources: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["source"].as_str())
        .collect();
    assert_eq!(
        sources,
        ["ledig", "ledger", "ledger"],
        "newest first: {all}"
    );
    assert_eq!(all["next_before"], Value::Null);
    let newest_ledger = &entries[1];
    assert_eq!(
        newest_ledger["body_text"],
        Value::Null,
        "not UTF-8: {newest_ledger}"
    );
    assert_eq!(newest_ledger["body_base64"], b64_bytes(&binary));
    assert_eq!(newest_ledger["size"], 5);
    let oldest = &entries[2];
    assert_eq!(
        oldest["body_text"].as_str().map(str::as_bytes),
        Some(&text[..])
    );
    assert_eq!(oldest["body_base64"], b64_bytes(&text));
    assert!(
        oldest["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("body is not valid JSON")),
        "{oldest}"
    );
    assert!(
        oldest["headers"]["x-ledger-signature"].as_str().is_some(),
        "the signature is kept to re-check it: {oldest}"
    );
    assert!(oldest["received_at"].as_i64().is_some_and(|t| t > 0));

    // By source, and paged.
    let ledger = admin_ok(&gw, "GET", "/admin/quarantine?source=ledger&limit=1");
    let page: Vec<i64> = ledger["quarantine"]
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|e| e["id"].as_i64())
        .collect();
    assert_eq!(page, [newest_ledger["id"].as_i64().expect("id")]);
    let next = ledger["next_before"]
        .as_i64()
        .expect("a full page has a next");
    let rest = admin_ok(
        &gw,
        "GET",
        &format!("/admin/quarantine?source=ledger&before={next}"),
    );
    assert_eq!(rest["quarantine"][0]["id"], oldest["id"]);
    assert_eq!(rest["quarantine"].as_array().map(Vec::len), Some(1));

    let id = oldest["id"].as_i64().expect("id");
    let one = admin_ok(&gw, "GET", &format!("/admin/quarantine/{id}"));
    assert_eq!(&one, oldest);
    gw.admin("GET", "/admin/quarantine/999").assert_error(404);
    let r = gw.admin("GET", "/admin/quarantine?type=ledger.transaction.created");
    r.assert_error(400);
    assert_eq!(
        r.json()["error"],
        "`type` does not apply to /admin/quarantine (it takes: source, before, limit)"
    );
    gw.admin("POST", "/admin/quarantine").assert_error(405);
    gw.get("/admin/quarantine").assert_error(401);
}

/// The same bad body sent again and again (issue 20): one quarantine entry whose `repeats`
/// counts the arrivals, not a row per request; every request is still answered 400 and
/// counted in `gateway_quarantined_total`.
#[test]
fn a_bad_body_sent_three_times_is_one_entry_with_three_repeats() {
    let gw = Gateway::start_with_extra(ADMIN);
    let body = b"{\"id\":\"evt_again\",\"type\":".to_vec();
    for _ in 0..3 {
        gw.post_ledger(&body).assert_error(400);
    }
    // The same bytes from another source are that source's own entry.
    gw.post_ledig(&body).assert_error(400);

    let all = admin_ok(&gw, "GET", "/admin/quarantine");
    let entries = all["quarantine"].as_array().expect("an array");
    assert_eq!(entries.len(), 2, "{all}");
    let ledger = &entries[1];
    assert_eq!(ledger["source"], "ledger", "{all}");
    assert_eq!(ledger["repeats"], 3, "{ledger}");
    assert_eq!(ledger["body_base64"], b64_bytes(&body));
    let first = ledger["received_at"].as_i64().expect("received_at");
    let last = ledger["last_seen_at"].as_i64().expect("last_seen_at");
    assert!(first <= last && last <= now_ms(), "{ledger}");
    assert_eq!(entries[0]["source"], "ledig");
    assert_eq!(entries[0]["repeats"], 1);
    assert_eq!(entries[0]["last_seen_at"], entries[0]["received_at"]);
    assert_eq!(count(&gw.db(), "SELECT count(*) FROM quarantine"), 2);
    let m = gw.metrics();
    assert_eq!(
        metric(&m, r#"gateway_quarantined_total{source="ledger"}"#),
        3.0
    );
}

fn b64_bytes(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
