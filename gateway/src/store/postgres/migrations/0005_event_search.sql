-- The admin API's filters (docs/console.md, "How fast"): by source and by type, each entry
-- ending with the seq so the newest matches come first, and by the provider's event id (the
-- dedup key). Without them a filter matching nothing, or only old events, read every event.
-- Built without CONCURRENTLY: migrations run in a transaction, and the table is locked
-- against writes while they are built (seconds per million events).
CREATE INDEX events_source ON events (source, seq);
CREATE INDEX events_type ON events (event_type, seq);
CREATE INDEX events_dedup_key ON events (dedup_key);
