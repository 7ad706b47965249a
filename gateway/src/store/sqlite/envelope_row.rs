//! How an event's envelope is kept in its row. The envelope's `data` is usually the webhook's
//! payload copied verbatim from the raw body, which the row keeps anyway (for signature
//! re-checks); storing it twice made each event a quarter larger, and a commit's time is mostly
//! the bytes it writes. So the writer stores the envelope without it plus where to find it
//! (`data_at`, `data_from`, `data_len`), and every read goes through the `stored_events` view,
//! which puts it back. This module must never let a row lose its payload: whatever does not
//! check out is stored whole.

use super::super::NewEvent;
use std::borrow::Cow;

/// The envelope as the row keeps it: without its `data` when that is a part of the raw body,
/// with the checked span to put it back (`data_at`, `data_from`, `data_len`). A span that does
/// not fit the texts (never expected) stores the envelope whole.
pub(super) fn stored_envelope(e: &NewEvent) -> (Cow<'_, str>, Option<SpanColumns>) {
    match cut_payload(e) {
        Some((text, span)) => (Cow::Owned(text), Some(span)),
        None => (Cow::Borrowed(e.envelope.as_str()), None),
    }
}

/// The `data_at`, `data_from` and `data_len` columns of a row whose envelope was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SpanColumns {
    pub(super) at: i64,
    pub(super) from: i64,
    pub(super) len: i64,
}

fn cut_payload(e: &NewEvent) -> Option<(String, SpanColumns)> {
    let span = e.data_span?;
    let end = span.in_envelope.checked_add(span.len)?;
    let value = e.envelope.as_bytes().get(span.in_envelope..end)?;
    let in_body = e
        .raw_body
        .get(span.in_body..span.in_body.checked_add(span.len)?)?;
    if value != in_body {
        return None;
    }
    let (head, tail) = (e.envelope.get(..span.in_envelope)?, e.envelope.get(end..)?);
    let columns = SpanColumns {
        at: i64::try_from(span.in_envelope).ok()?,
        from: i64::try_from(span.in_body).ok()?,
        len: i64::try_from(span.len).ok()?,
    };
    Some(([head, tail].concat(), columns))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{delivery, event, open, processed};
    use super::*;
    use crate::store::{DataSpan, DeliveryState, IngestOutcome, Store as _};
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
        let due = store.due_deliveries(i64::MAX, 10).await.expect("reads");
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
