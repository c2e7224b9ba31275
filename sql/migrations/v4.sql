-- Schema version 4 (migration from version 3). Applied like v2.sql and v3.sql: one
-- transaction, under the migration lock, with search_path set to the store's schema and
-- pg_temp last. Each topic writes its own block; nothing is removed or renamed.

-- v4 block: retention
-- Per-stream retention (lifecycle/retention.py). first_version: every position below it is
-- hidden for good (truncate_stream, and the limits in force when they are changed); max_count
-- and max_age: limits applied by every read as it runs (storage/retention.py). Hidden rows
-- are deleted later, in bounded batches, by the scavenger actor (lifecycle/scavenger.py).
-- Adding columns with a constant default or none rewrites nothing.
ALTER TABLE streams ADD COLUMN IF NOT EXISTS first_version bigint NOT NULL DEFAULT 1;
ALTER TABLE streams ADD COLUMN IF NOT EXISTS max_count bigint;
ALTER TABLE streams ADD COLUMN IF NOT EXISTS max_age interval;
-- The streams the scavenger visits: those with anything hidden or a limit.
CREATE INDEX IF NOT EXISTS streams_retention_idx ON streams (stream_id)
    WHERE first_version > 1 OR max_count IS NOT NULL OR max_age IS NOT NULL;
-- end of v4 block: retention

-- v4 block: subscription health
-- What a subscription's health needs across processes (subscriptions.health): when its
-- checkpoint last moved (written by the checkpoint UPDATE that already happens on an ack,
-- so an ack costs one column more and an append nothing), and the state its holder last
-- wrote ('live', 'stalled'; 'stopped' once nobody holds it after it gave up on an error),
-- why and when. Written only on a change of state, never per event. Nullable, no default:
-- adding them rewrites nothing and holds the table's lock for a moment only. Locking order:
-- this block locks only subscriptions, which delete_stream() locks after streams and events,
-- so it must stay after any block that locks those (else a concurrent delete could deadlock).
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS last_ack_at timestamptz;
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS health text;
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS health_reason text;
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS health_at timestamptz;
-- end of v4 block: subscription health

INSERT INTO schema_version (version) VALUES (4) ON CONFLICT (version) DO NOTHING;
