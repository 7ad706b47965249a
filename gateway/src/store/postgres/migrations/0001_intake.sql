-- The ack path's tables. Columns mean what they mean in the SQLite schema (store/schema.rs);
-- what differs is how uniqueness is kept: here by unique indexes, because several replicas
-- write at once and none of them can hold the whole dedup window in memory.

CREATE TABLE events (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- not commit order: replicas
                                                                   -- commit concurrently
    source       text   NOT NULL,
    dedup_key    text   NOT NULL,
    event_type   text   NOT NULL,
    envelope     text   NOT NULL,   -- without `data` when data_at is set (as in SQLite)
    raw_body     bytea  NOT NULL,
    headers      text   NOT NULL,
    received_at  bigint NOT NULL,   -- unix ms
    data_at      bigint,           -- where `data` goes back in (byte offset), or NULL
    data_from    bigint,           -- ... taken from raw_body at this byte offset
    data_len     bigint            -- ... this many bytes
);

-- (source, dedup key) pairs within the dedup window: the insert-if-absent that makes
-- "stored once" a database guarantee across replicas. Pruned by `seen`.
CREATE TABLE dedup_keys (
    source     text   NOT NULL,
    dedup_key  text   NOT NULL,
    seen       bigint NOT NULL,     -- unix ms of the stored event's arrival
    PRIMARY KEY (source, dedup_key)
);
CREATE INDEX dedup_keys_seen ON dedup_keys (seen);

-- The latest stored state of each object of a provider that signs no event id (Ledig): a
-- delivery is a retry when its state equals this one within its source's retry window.
CREATE TABLE object_states (
    source   text   NOT NULL,
    object   bytea  NOT NULL,       -- SHA-256 of the object (providers' envelope.rs)
    state    bytea  NOT NULL,       -- SHA-256 of the state
    seen     bigint NOT NULL,       -- unix ms the state arrived
    expires  bigint NOT NULL,       -- seen + the retry window
    PRIMARY KEY (source, object)
);
CREATE INDEX object_states_expires ON object_states (expires);

-- Authenticated bodies that could not be normalized; one row per (source, body).
CREATE TABLE quarantine (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source        text    NOT NULL,
    reason        text    NOT NULL, -- of the first arrival, like headers
    raw_body      bytea   NOT NULL,
    headers       text    NOT NULL,
    received_at   bigint  NOT NULL, -- unix ms, first arrival
    body_hash     bytea   NOT NULL, -- SHA-256 of raw_body
    repeats       integer NOT NULL DEFAULT 1,
    last_seen_at  bigint  NOT NULL,
    UNIQUE (source, body_hash)
);

-- Small key/value facts; `probe` is rewritten by readiness checks.
CREATE TABLE meta (
    key    text PRIMARY KEY,
    value  text NOT NULL
);
