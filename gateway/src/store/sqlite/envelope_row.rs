//! The SQLite side of [`super::super::envelope_cut`]: its tests against a real store (the
//! `stored_events` view puts every payload back).

pub(super) use super::super::envelope_cut::stored_envelope;

#[cfg(test)]
mod tests {
    use super::super::tests::{delivery, event, open, processed};
    use super::*;
    use crate::store::{DataSpan, DeliveryState, IngestOutcome, Intake as _, NewEvent, Store as _};
    use rusqlite::Connection;

    /// The payload, with multi-byte characters so byte and character offsets differ.
    const DATA: &str = r#"{"note":"naïve ✓","n":[1,"}"]}"#;

    /// An event whose envelope's `data` is a verbatim part of its raw body.
    fn with_payload(key: &str) -> NewEvent {
        let envelope =
            format!(r#"{{"id":"{key}","subject":"ü → 1","data":{DATA},"receivedat":"t"}}"#);
        let raw_body = format!(r#"{{"id":"{key}","tag":"é","data":{DATA}}}"#);
        let data_span = Some(DataSpan {
            in_envelope: envelope.find(DATA).expect("data in the envelope"),
            in_body: raw_body.find(DATA).expect("data in the body"),
            len: DATA.len(),
        });
        NewEvent {
            subject: None,
            envelope,
            data_span,
            raw_body: raw_body.into(),
            ..event(key)
        }
    }

    fn stored(outcome: IngestOutcome) -> i64 {
        match outcome {
            IngestOutcome::Stored { seq } => seq,
            IngestOutcome::Duplicate => panic!("stored as a duplicate"),
        }
    }

    #[tokio::test]
    async fn the_payload_is_stored_once_and_every_read_puts_it_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.db");
        let (first, second) = (with_payload("evt_1"), with_payload("evt_2"));
        let (store, writer) = open(&path);
        let routed = stored(store.ingest(first.clone()).await.expect("ingests"));
        let pending = stored(store.ingest(second.clone()).await.expect("ingests"));
        let mut waiting = delivery(DeliveryState::Pending { next_attempt_ms: 0 });
        waiting.envelope = None;
        store
            .complete(processed(routed, vec![waiting]))
            .await
            .expect("completes");
        drop(store);
        writer.join();

        let conn = Connection::open(&path).expect("opens");
        let (kept, at): (i64, Option<i64>) = conn
            .query_row(
                "SELECT length(CAST(envelope AS BLOB)), data_at FROM events WHERE seq = ?1",
                [routed],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("reads the row");
        assert_eq!(
            kept,
            i64::try_from(first.envelope.len() - DATA.len()).expect("small")
        );
        assert!(at.is_some());
        let view: String = conn
            .query_row(
                "SELECT envelope FROM stored_events WHERE seq = ?1",
                [routed],
                |r| r.get(0),
            )
            .expect("reads the view");
        assert_eq!(view, first.envelope);

        // After a restart every read comes from the file: intake, deliveries, admin.
        let (store, writer) = open(&path);
        let events = store.pending_events(0, 10).await.expect("reads");
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].seq, &events[0].envelope),
            (pending, &second.envelope)
        );
        let due = store
            .claim_due_deliveries(i64::MAX, 10)
            .await
            .expect("reads");
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].envelope, first.envelope);
        let detail = store.event(routed).await.expect("reads").expect("exists");
        let expected: serde_json::Value = serde_json::from_str(&first.envelope).expect("json");
        assert_eq!(detail.envelope, expected);
        drop(store);
        writer.join();
    }

    #[test]
    fn a_span_that_does_not_fit_stores_the_envelope_whole() {
        let good = with_payload("evt_1");
        let (text, span) = stored_envelope(&good);
        assert_eq!(text.len(), good.envelope.len() - DATA.len());
        assert!(span.is_some());
        let Some(right) = good.data_span else {
            panic!("a span");
        };
        let wrong = [
            DataSpan {
                in_body: right.in_body + 1,
                ..right
            },
            DataSpan {
                in_envelope: right.in_envelope + 1,
                ..right
            },
            DataSpan {
                len: usize::MAX,
                ..right
            },
            DataSpan {
                in_body: usize::MAX,
                ..right
            },
        ];
        for span in wrong {
            let event = NewEvent {
                subject: None,
                data_span: Some(span),
                ..good.clone()
            };
            let (text, cut) = stored_envelope(&event);
            assert_eq!(
                (text.as_ref(), cut),
                (good.envelope.as_str(), None),
                "{span:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_store_from_before_the_payload_columns_is_upgraded_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.db");
        let old = Connection::open(&path).expect("creates");
        old.execute_batch(
            "CREATE TABLE events (seq INTEGER PRIMARY KEY, source TEXT NOT NULL, \
               dedup_key TEXT NOT NULL, event_type TEXT NOT NULL, envelope TEXT NOT NULL, \
               raw_body BLOB NOT NULL, headers TEXT NOT NULL, received_at INTEGER NOT NULL, \
               status TEXT NOT NULL DEFAULT 'pending');
             CREATE TABLE routings (seq INTEGER PRIMARY KEY, status TEXT NOT NULL, \
               plugin_results TEXT, processed_at INTEGER NOT NULL);
             CREATE VIEW event_states AS SELECT e.seq, e.envelope FROM events e \
               LEFT JOIN routings r ON r.seq = e.seq;
             INSERT INTO events (source, dedup_key, event_type, envelope, raw_body, headers, \
               received_at) VALUES ('ledger', 'evt_old', 'ledger.x', '{\"old\":true}', x'7b7d', \
               '{}', 0);",
        )
        .expect("an old store");
        drop(old);
        let (store, writer) = open(&path);
        let new = stored(
            store
                .ingest(with_payload("evt_new"))
                .await
                .expect("ingests"),
        );
        let old_event = store.event(1).await.expect("reads").expect("exists");
        assert_eq!(old_event.envelope, serde_json::json!({ "old": true }));
        let new_event = store.event(new).await.expect("reads").expect("exists");
        assert_eq!(new_event.envelope["data"]["note"], "naïve ✓");
        drop(store);
        writer.join();
    }
}
