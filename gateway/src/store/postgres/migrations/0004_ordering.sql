-- Ordered delivery per subject (destinations with ordering = "subject", docs/ordering.md).
-- A NULL subject is an unordered delivery, as every delivery written before this version.
-- The ordering key of a subject's deliveries to one destination is
-- (order_at, order_next, event_seq, id); the claim hands out only the first of those still
-- pending or dead and holding the subject, and none while another of the subject is in
-- flight (claimed under a lease that has not run out). Claims of ordered deliveries take a
-- transaction-level advisory lock per (destination, subject) first, so two replicas never
-- decide about one subject at once (postgres/ordering.rs).
ALTER TABLE deliveries
    ADD COLUMN subject       text,
    ADD COLUMN order_at      bigint  NOT NULL DEFAULT 0,     -- the provider's time, unix ms; 0: none
    ADD COLUMN order_next    bigint  NOT NULL DEFAULT 0,     -- its tie-breaker (data.updatedAt); 0: none
    ADD COLUMN holds_subject boolean NOT NULL DEFAULT false; -- dead and keeping its subject blocked

CREATE INDEX deliveries_ordered
    ON deliveries (destination, subject, order_at, order_next, event_seq, id)
    WHERE subject IS NOT NULL;
-- Due rows of each kind apart: a subject held behind a dead letter keeps its later
-- deliveries due, and the unordered claim must not walk them on every poll.
CREATE INDEX deliveries_due_ordered ON deliveries (next_attempt_at)
    WHERE status = 'pending' AND subject IS NOT NULL;
CREATE INDEX deliveries_due_unordered ON deliveries (next_attempt_at)
    WHERE status = 'pending' AND subject IS NULL;
-- The deliveries that hold what comes after them in their subject: the claim's "nothing earlier
-- is waiting" test reads these, never a subject's delivered history.
CREATE INDEX deliveries_holding
    ON deliveries (destination, subject, order_at, order_next, event_seq, id)
    WHERE subject IS NOT NULL AND (status = 'pending' OR (status = 'dead' AND holds_subject));
