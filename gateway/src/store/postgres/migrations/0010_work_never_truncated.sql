-- No vacuum truncates event_work, autovacuum included. Truncating needs an ACCESS EXCLUSIVE
-- lock, and every ack inserts into this table: while autovacuum holds it to cut off the empty
-- pages at the end (the table is emptied all the time, so there usually are some), every ack
-- batch waits, up to 20 ms each time (autovacuum checks for waiters that often, then lets go),
-- and it then tries again. The gateway's own vacuum of this table already passed TRUNCATE false;
-- the empty pages are reused by later inserts.
ALTER TABLE event_work SET (vacuum_truncate = false);
