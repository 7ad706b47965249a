//! Dead letters on every backend: the groups' amounts are the ones kept on each delivery when
//! it died (dead at its first attempt, during routing, or at a later attempt), summed exactly
//! per currency, and only while it is dead; a redrive filter's type glob; dead plugin stages
//! selected by a filter.

use super::super::{
    AttemptDone, AttemptRecord, DeadFilter, DeliveryState, EventStatus, NewDelivery,
    RedriveSelection, RouteRunState, RouteRunUpdate, StuckAmount,
};
use super::{Harness, event, routing, stored_seq, waiting_delivery};
use std::sync::Arc;

fn failed_attempt(at: i64) -> AttemptRecord {
    AttemptRecord {
        at,
        status: Some(503),
        error: None,
        duration_ms: 1,
    }
}

/// A delivery that died at its first attempt, keeping the amount of `envelope`.
fn dead_at_once(envelope: &str, at: i64) -> NewDelivery {
    let state = DeliveryState::Dead {
        reason: "HTTP 503".into(),
    };
    NewDelivery {
        stuck: StuckAmount::if_dead(&state, envelope),
        state,
        attempts: vec![failed_attempt(at)],
        ..waiting_delivery(at)
    }
}

pub(super) async fn dead_letter_groups_sum_the_amounts_kept_when_deliveries_die(h: &mut Harness) {
    let store = h.open().await;
    let now = super::super::unix_ms();
    let amounts = [
        r#"{"amount":"0.10","currency":"eur"}"#,
        r#"{"amount":"0.20","currency":"EUR"}"#,
        // Beyond an i64 of units: summed apart from the aggregate, still exactly.
        r#"{"amount":"99999999999999999999.99","currency":"usd"}"#,
        r#"{"amount":"n/a","currency":"usd"}"#,
        r#"{"note":"no amount"}"#,
    ];
    let mut seqs = Vec::new();
    for (n, data) in amounts.iter().enumerate() {
        let mut e = event("shop", &format!("dl{n}"), now);
        e.envelope = format!(r#"{{"data":{data}}}"#);
        seqs.push(stored_seq(store.ingest(e).await.expect("ingests")));
    }
    let claimed = store.claim_events(10).await.expect("claims");
    assert_eq!(claimed.len(), amounts.len());
    let results = claimed
        .iter()
        .map(|c| {
            let delivery = if c.event.seq == seqs[1] {
                waiting_delivery(now)
            } else {
                dead_at_once(&c.event.envelope, now)
            };
            routing(c.event.seq, EventStatus::Failed, vec![delivery])
        })
        .collect();
    store.complete(Arc::new(results)).await.expect("completes");
    // The waiting one dies at its next attempt, with the envelope it was sent.
    let due = store.claim_due_deliveries(now, 10).await.expect("claims");
    assert_eq!(due.len(), 1);
    let state = DeliveryState::Dead {
        reason: "HTTP 503".into(),
    };
    store
        .record_attempt(AttemptDone {
            delivery_id: due[0].id,
            attempt: failed_attempt(now),
            stuck: StuckAmount::if_dead(&state, &due[0].envelope),
            state,
            holds_subject: false,
        })
        .await
        .expect("records");

    let groups = store.dead_letter_groups().await.expect("groups");
    assert_eq!(groups.len(), 1, "{groups:?}");
    let sums: Vec<(&str, &str)> = groups[0]
        .amounts
        .iter()
        .map(|s| (s.currency.as_str(), s.sum.as_str()))
        .collect();
    assert_eq!(
        (groups[0].count, groups[0].unsummed, sums),
        (
            5,
            1,
            vec![("EUR", "0.30"), ("USD", "99999999999999999999.99")]
        )
    );

    // Redriven, it is no longer dead: its amount leaves the sums.
    store
        .redrive(RedriveSelection::Deliveries(vec![due[0].id]))
        .await
        .expect("redrives");
    let groups = store.dead_letter_groups().await.expect("groups");
    assert_eq!(
        (groups[0].count, groups[0].amounts[0].sum.as_str()),
        (4, "0.10")
    );

    // A redrive filter's type glob means what it means in the events list: `*` any run of
    // characters, case-sensitive, every other character itself.
    for (glob, matching) in [
        ("ledger.*", 4),
        ("*.test", 4),
        ("*", 4),
        ("ledger.webhook.test", 4),
        ("Ledger.*", 0),
        ("ledger_webhook*", 0),
        ("ledger.webhook.tes?", 0),
        ("ledger.webhook.%", 0),
        ("ledger.[w]*", 0),
    ] {
        let filter = DeadFilter {
            event_type: Some(glob.into()),
            ..DeadFilter::default()
        };
        let (count, _) = store.count_dead(filter.clone()).await.expect("counts");
        let page = store
            .dead_page(filter, 0, i64::MAX, 10)
            .await
            .expect("pages");
        assert_eq!((count, page.len()), (matching, matching as usize), "{glob}");
    }

    // A plugin stage that died (a route run): selected by `plugin_stages`, never as a delivery.
    let seq = stored_seq(
        store
            .ingest(event("shop", "stage", now))
            .await
            .expect("ingests"),
    );
    assert_eq!(store.claim_events(10).await.expect("claims").len(), 1);
    let mut dead_stage = routing(seq, EventStatus::Failed, Vec::new());
    dead_stage.route_runs = vec![RouteRunUpdate {
        id: None,
        route: "screened".into(),
        state: RouteRunState::Dead,
        reason: "trap".into(),
        attempts: 1,
    }];
    store
        .complete(Arc::new(vec![dead_stage]))
        .await
        .expect("completes");
    let stages = |route: &str, reason: &str| DeadFilter {
        plugin_stages: true,
        route: Some(route.into()),
        reason: Some(reason.into()),
        event_type: Some("ledger.*".into()),
        ..DeadFilter::default()
    };
    let (count, through) = store
        .count_dead(stages("screened", "trap"))
        .await
        .expect("counts");
    let through = through.expect("a bound");
    assert_eq!(count, 1);
    let to_a_destination = DeadFilter {
        destination: Some("d".into()),
        ..stages("screened", "trap")
    };
    for other in [
        stages("other", "trap"),
        stages("screened", "HTTP 503"),
        to_a_destination,
    ] {
        assert_eq!(store.count_dead(other).await.expect("counts").0, 0);
    }
    let deliveries = DeadFilter {
        route: Some("r".into()),
        ..DeadFilter::default()
    };
    assert_eq!(store.count_dead(deliveries).await.expect("counts").0, 4);
    let ids = store
        .dead_page(stages("screened", "trap"), 0, through, 10)
        .await
        .expect("pages");
    assert_eq!(ids, [through]);
    let redriven = store
        .redrive(RedriveSelection::RouteRuns(ids))
        .await
        .expect("redrives");
    assert_eq!(redriven, 1);
    assert_eq!(
        store
            .count_dead(stages("screened", "trap"))
            .await
            .expect("counts")
            .0,
        0
    );
    h.close(store).await;
}
