-- An event of a subject that is stored but not routed yet holds the later deliveries of its
-- subject to ordered destinations (docs/ordering.md): until it is routed nobody knows whether
-- it goes to them. Ingest writes the event's ordering key on its work row (same statement as
-- the event); routing deletes the row in the same transaction that records the deliveries, so
-- a claim sees either the row or the delivery, never neither. A routing waiting for a plugin
-- retry holds the same way through its route run; a dead one (or a done one) holds nothing.
-- NULL subject: holds nothing (events without a subject, replays, rows from before this).
ALTER TABLE event_work
    ADD COLUMN subject    text,
    ADD COLUMN order_at   bigint NOT NULL DEFAULT 0,  -- as deliveries.order_at
    ADD COLUMN order_next bigint NOT NULL DEFAULT 0;  -- as deliveries.order_next
-- Only events with a subject are in it, and only while unrouted: small, and no index change
-- when a claim moves the lease (the update stays HOT).
CREATE INDEX event_work_subjects ON event_work (subject, order_at, order_next, seq)
    WHERE subject IS NOT NULL;

ALTER TABLE route_runs
    ADD COLUMN subject    text,
    ADD COLUMN order_at   bigint NOT NULL DEFAULT 0,
    ADD COLUMN order_next bigint NOT NULL DEFAULT 0;
CREATE INDEX route_runs_subjects ON route_runs (subject, order_at, order_next, event_seq)
    WHERE status = 'retry' AND subject IS NOT NULL;
