-- The amount of what a dead delivery would send, written when it dies (store/dead_letters.rs,
-- StuckAmount), so the dead-letter groups are one aggregate over the dead deliveries (through
-- the partial index `deliveries_dead`) and never read envelopes. Only read while status =
-- 'dead'. The dead deliveries already there get theirs in the same transaction
-- (migrations.rs, backfill_stuck_amounts). No index of its own: with statistics the planner
-- reads the dead rows through `deliveries_dead` and aggregates them in memory (50-70 ms per
-- 100,000), and did not use a covering index on the group's columns when it had one.
ALTER TABLE deliveries
    ADD COLUMN amount       text,    -- exactly as the payload has it; NULL: none
    ADD COLUMN currency     text,    -- upper case; NULL: none named
    ADD COLUMN amount_units bigint,  -- amount = units / 10^scale, when a plain decimal
    ADD COLUMN amount_scale bigint;  -- fitting an i64; else NULL
