-- Empties every table and restarts ids at 1 (tests and benchmarks only).
TRUNCATE parked_events, links, events, streams, subscriptions, snapshots, data_keys, forgotten_subjects RESTART IDENTITY;
UPDATE event_counter SET last_event_id = 0;
-- Forgotten subjects and keys are gone: every key cache must drop what it holds.
UPDATE forget_generation SET generation = floor(random() * 4611686018427387904)::bigint WHERE id = 1;
-- The archive's manifest (the files themselves are left where they are).
TRUNCATE archive_files RESTART IDENTITY;
-- Event ids and stream ids start again at 1: no tombstone or earlier release's event is left.
-- The store keeps its identity (its archive targets stay its own).
TRUNCATE hard_deletes;
UPDATE store_identity SET legacy_event_id = 0, legacy_stream_id = 0 WHERE id = 1;
