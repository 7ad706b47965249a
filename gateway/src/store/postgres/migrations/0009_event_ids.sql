-- The admin API's search by the provider's event id (the dedup key), the way migration 8
-- searches subjects: one row per ingest batch with the stored events' seqs and the hashes of
-- their dedup keys (the first 8 bytes of SHA-256, big-endian), in matching order, instead of
-- the B-tree `events_dedup_key`, which put every ack's key at a random place (one more WAL
-- record and one random page per event; docs/performance.md, "Eager write-back and the id
-- search without an index"). A search scans this narrow table for the rows holding the hash
-- and confirms each candidate's dedup key. Rows go when retention has deleted all their
-- events.
CREATE TABLE event_ids (
    first_seq  bigint   PRIMARY KEY,
    last_seq   bigint   NOT NULL,
    seqs       bigint[] NOT NULL,
    hashes     bigint[] NOT NULL
);

-- The events already stored get their rows here, a thousand seqs to a row, with no insert
-- in between (a replica of an earlier version still acking waits for this transaction), so
-- the index can go without any event becoming unfindable.
LOCK TABLE events IN SHARE MODE;
INSERT INTO event_ids (first_seq, last_seq, seqs, hashes)
SELECT min(seq), max(seq), array_agg(seq ORDER BY seq), array_agg(hash ORDER BY seq)
  FROM (SELECT seq, ('x' || left(encode(sha256(convert_to(dedup_key, 'UTF8')), 'hex'), 16))
                    ::bit(64)::bigint AS hash
          FROM events) h
 GROUP BY seq / 1000;
DROP INDEX events_dedup_key;
