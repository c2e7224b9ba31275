-- Empties every table and restarts ids at 1 (tests and benchmarks only).
TRUNCATE parked_events, links, events, streams, subscriptions, snapshots, data_keys, forgotten_subjects RESTART IDENTITY;
UPDATE event_counter SET last_event_id = 0;
-- The archive's manifest (the files themselves are left where they are).
TRUNCATE archive_files RESTART IDENTITY;
