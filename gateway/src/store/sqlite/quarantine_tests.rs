//! The quarantine: a body a source sends again is counted on its row, not stored again; rows
//! not seen for the retention are deleted in steps; a store from before these columns is
//! upgraded at open and keeps its rows.

use super::tests::open;
use super::*;
use crate::store::QuarantinedBody;

fn bad(source: &str, body: &'static [u8], at: i64) -> QuarantinedBody {
    QuarantinedBody {
        source: source.into(),
        reason: "body is not valid JSON".into(),
        raw_body: bytes::Bytes::from_static(body),
        headers: "{}".into(),
        received_at_ms: at,
    }
}

/// `(id, source, repeats, received_at, last_seen_at)` of every row, oldest first.
async fn rows(store: &SqliteStore) -> Vec<(i64, String, i64, i64, i64)> {
    let mut entries = store.list_quarantine(None, None, 100).await.expect("lists");
    entries.reverse();
    entries
        .into_iter()
        .map(|e| (e.id, e.source, e.repeats, e.received_at, e.last_seen_at))
        .collect()
}

#[tokio::test]
async fn the_same_body_from_the_same_source_is_counted_not_stored_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, writer) = open(&dir.path().join("g.db"));
    for at in [1_000, 3_000, 2_000] {
        store
            .quarantine(bad("ledig", b"{not json", at))
            .await
            .expect("kept");
    }
    // Another source, another body: rows of their own.
    store
        .quarantine(bad("ledger", b"{not json", 4_000))
        .await
        .expect("kept");
    store
        .quarantine(bad("ledig", b"{not json!", 5_000))
        .await
        .expect("kept");
    assert_eq!(
        rows(&store).await,
        [
            // The latest arrival is the latest time seen, whatever order they came in.
            (1, "ledig".to_owned(), 3, 1_000, 3_000),
            (2, "ledger".to_owned(), 1, 4_000, 4_000),
            (3, "ledig".to_owned(), 1, 5_000, 5_000),
        ]
    );
    let kept = store
        .list_quarantine(None, Some(2), 1)
        .await
        .expect("lists");
    assert_eq!(kept[0].body_text.as_deref(), Some("{not json"));
    drop(store);
    writer.join();
}

#[tokio::test]
async fn bodies_not_seen_for_the_retention_are_deleted_in_steps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, writer) = open(&dir.path().join("g.db"));
    let bodies: [&'static [u8]; 6] = [b"a", b"b", b"c", b"d", b"e", b"f"];
    for (i, body) in bodies.iter().enumerate() {
        let at = 1_000 * (i64::try_from(i).expect("small") + 1);
        store
            .quarantine(bad("ledig", body, at))
            .await
            .expect("kept");
    }
    // `b` (first seen at 2,000) comes again at 9,000: it is kept past a cutoff of 5,500.
    store
        .quarantine(bad("ledig", b"b", 9_000))
        .await
        .expect("kept");

    let mut after = 0;
    let mut deleted = 0;
    let mut steps = 0;
    loop {
        let step = store
            .expire_quarantine(5_500, after, 2)
            .await
            .expect("expires");
        deleted += step.deleted;
        steps += 1;
        match step.resume_after {
            Some(id) => after = id,
            None => break,
        }
    }
    // Steps over rows 1-2, 3-4 and 5-6, where row 6 ends the pass: it arrived inside the
    // retention. Deleted: a, c, d, e.
    assert_eq!((deleted, steps), (4, 3));
    let left: Vec<(i64, i64)> = rows(&store).await.iter().map(|r| (r.0, r.2)).collect();
    assert_eq!(left, [(2, 2), (6, 1)]);
    drop(store);
    writer.join();
}

#[tokio::test]
async fn an_older_store_is_upgraded_at_open_and_keeps_its_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("g.db");
    {
        let conn = Connection::open(&path).expect("opens");
        schema::apply(&conn).expect("schema");
        // The quarantine table as the first release made it, with one row in it.
        conn.execute_batch(
            "DROP TABLE quarantine;
             CREATE TABLE quarantine (id INTEGER PRIMARY KEY, source TEXT NOT NULL,
                 reason TEXT NOT NULL, raw_body BLOB NOT NULL, headers TEXT NOT NULL,
                 received_at INTEGER NOT NULL);
             INSERT INTO quarantine (source, reason, raw_body, headers, received_at)
                 VALUES ('ledig', 'old', X'7B', '{}', 500);",
        )
        .expect("an old quarantine table");
    }
    let (store, writer) = open(&path);
    assert_eq!(rows(&store).await, [(1, "ledig".to_owned(), 1, 500, 500)]);
    // The old row has no hash: the same body is stored once more, then counted there.
    for at in [600, 700] {
        store
            .quarantine(bad("ledig", b"{", at))
            .await
            .expect("kept");
    }
    assert_eq!(
        rows(&store).await,
        [
            (1, "ledig".to_owned(), 1, 500, 500),
            (2, "ledig".to_owned(), 2, 600, 700)
        ]
    );
    let expired = store.expire_quarantine(650, 0, 10).await.expect("expires");
    assert_eq!(expired.deleted, 1);
    drop(store);
    writer.join();
}
