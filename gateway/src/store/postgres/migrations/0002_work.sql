-- The work after the ack, shared by every replica. Columns mean what they mean in the SQLite
-- schema (store/schema.rs); what is new is how work is handed out: a replica CLAIMS a row by
-- writing its own id into `lease_owner` and moving the row's due time one lease ahead, in a
-- statement that skips rows another replica has locked (FOR UPDATE SKIP LOCKED). While it works
-- it renews the lease; if it dies the row simply becomes due again when the lease runs out and
-- another replica claims it. Results are written only by the replica that still holds the claim.

-- Events waiting to be routed: inserted with the event (same statement as the dedup insert)
-- and by a replay request, deleted when routing's result commits. Small and hot: it holds only
-- what is not finished, so claiming stays fast however many events are stored.
CREATE TABLE event_work (
    seq          bigint  PRIMARY KEY,            -- events.seq
    replay       boolean NOT NULL DEFAULT false, -- asked for by an operator (admin replay)
    available_at bigint  NOT NULL DEFAULT 0,     -- unix ms; claimable from then on
    lease_owner  text                            -- the replica that claimed it last
);
-- Every row is inserted, updated (claimed) and deleted within seconds, so the table is mostly
-- dead tuples unless vacuumed often, and a claim walks them before the first free row: vacuum
-- it after every few thousand changes whatever its size, and leave room on each page so a
-- claim's update stays on its page (no index change: HOT).
ALTER TABLE event_work SET (fillfactor = 70, autovacuum_vacuum_scale_factor = 0,
                            autovacuum_vacuum_threshold = 5000,
                            autovacuum_vacuum_insert_scale_factor = 0,
                            autovacuum_vacuum_insert_threshold = 5000,
                            autovacuum_vacuum_cost_delay = 0);

-- What routing made of an event (as in SQLite): no row = not routed yet.
CREATE TABLE routings (
    seq            bigint PRIMARY KEY,           -- events.seq
    status         text   NOT NULL,              -- EventStatus other than pending
    plugin_results text,                         -- JSON array of plugin steps
    processed_at   bigint NOT NULL               -- unix ms of the last routing
);
CREATE INDEX routings_status ON routings (status, seq) WHERE status <> 'routed';

CREATE TABLE deliveries (
    id              bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_seq       bigint  NOT NULL,
    route           text    NOT NULL,
    destination     text    NOT NULL,
    webhook_id      text    NOT NULL,            -- same on every attempt
    envelope        text,                        -- when it differs from the event's; NULL once delivered
    status          text    NOT NULL,            -- pending | delivered | dead
    attempts        integer NOT NULL,
    next_attempt_at bigint,                      -- unix ms while pending; a claim moves it one lease ahead
    lease_owner     text,                        -- the replica that claimed its next attempt
    last_error      text,
    history         text    NOT NULL,            -- JSON array of attempts
    created_at      bigint  NOT NULL,
    updated_at      bigint  NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_dead ON deliveries (id) WHERE status = 'dead';
CREATE INDEX deliveries_by_event ON deliveries (event_seq);

CREATE TABLE route_runs (
    id              bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_seq       bigint  NOT NULL,
    route           text    NOT NULL,
    status          text    NOT NULL,            -- retry | dead | done
    attempts        integer NOT NULL,
    next_attempt_at bigint,                      -- unix ms while retry; a claim moves it one lease ahead
    lease_owner     text,
    reason          text    NOT NULL,
    created_at      bigint  NOT NULL,
    updated_at      bigint  NOT NULL
);
CREATE INDEX route_runs_due ON route_runs (next_attempt_at) WHERE status = 'retry';
CREATE INDEX route_runs_dead ON route_runs (id) WHERE status = 'dead';
CREATE INDEX route_runs_by_event ON route_runs (event_seq);

-- Events without their work row already: stored before this version existed.
INSERT INTO event_work (seq) SELECT seq FROM events;

-- Events with their whole envelope (`data` put back from raw_body where it was left out; the
-- cuts sit at JSON punctuation, so the pieces are UTF-8). Read envelopes through this view.
CREATE VIEW stored_events AS
    SELECT seq, source, dedup_key, event_type,
           CASE WHEN data_at IS NULL THEN envelope
                ELSE convert_from(
                         substr(convert_to(envelope, 'UTF8'), 1, data_at::int)
                      || substr(raw_body, data_from::int + 1, data_len::int)
                      || substr(convert_to(envelope, 'UTF8'), data_at::int + 1), 'UTF8')
           END AS envelope,
           raw_body, headers, received_at
    FROM events;

-- Every event with its routing state, for listings and filters.
CREATE VIEW event_states AS
    SELECT e.seq, e.dedup_key, e.source, e.event_type, e.received_at, e.envelope, e.headers,
           coalesce(r.status, 'pending') AS status, r.plugin_results, r.processed_at
    FROM stored_events e LEFT JOIN routings r ON r.seq = e.seq;
