-- The admin API's search by subject (docs/console.md, "How fast"), without an index entry per
-- event: a B-tree on the subject, a random key, cost one replica about a tenth of its maximum
-- ack rate (docs/performance.md). Instead each ingest statement appends one row for its batch:
-- the stored events' seqs and the hashes of their subjects (the first 8 bytes of SHA-256,
-- big-endian, as SQLite's `subject_keys`), in matching order; events without a subject are
-- left out. A search scans this narrow table for the rows holding the hash and confirms each
-- candidate against its envelope. Rows go when retention has deleted all their events.
CREATE TABLE event_subjects (
    first_seq  bigint   PRIMARY KEY,
    last_seq   bigint   NOT NULL,
    seqs       bigint[] NOT NULL,
    hashes     bigint[] NOT NULL
);

-- Events stored before this migration are not in it: a search reads them instead.
INSERT INTO meta (key, value)
SELECT 'subjects_from', (coalesce(max(seq), 0) + 1)::text FROM events
ON CONFLICT (key) DO NOTHING;
