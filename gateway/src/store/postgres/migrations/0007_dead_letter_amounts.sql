-- The amount of what a dead delivery would send, written when it dies (store/dead_letters.rs,
-- StuckAmount), so the dead-letter groups are one aggregate over an index of the dead
-- deliveries and never read envelopes. Only read while status = 'dead'. The dead deliveries
-- already there get theirs in the same transaction (migrations.rs, backfill_stuck_amounts).
ALTER TABLE deliveries
    ADD COLUMN amount       text,    -- exactly as the payload has it; NULL: none
    ADD COLUMN currency     text,    -- upper case; NULL: none named
    ADD COLUMN amount_units bigint,  -- amount = units / 10^scale, when a plain decimal
    ADD COLUMN amount_scale bigint;  -- fitting an i64; else NULL
-- Partial: a delivery enters it only when it dies, so neither the ack nor a delivery that
-- succeeds writes it; it covers the groups' aggregate (an index-only scan).
CREATE INDEX deliveries_dead_groups
    ON deliveries (destination, last_error, currency, amount_scale, updated_at, amount_units,
                   amount)
    WHERE status = 'dead';
