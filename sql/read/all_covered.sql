-- An all-streams read forward (read/all_events.sql, filled in below) and, in the same
-- statement, hence the same snapshot, the counter: event_ids are handed out under its row
-- lock, held to commit, so in one snapshot every event_id up to the counter is either
-- visible or hard-deleted, and none above it is visible (storage/reader.py
-- read_all_covered). The counter row comes back even when no event does (event_id NULL).
-- The outer ORDER BY sorts at most `count` rows (large values stay TOASTed pointers).
-- read_all_covered reads pages with read/all_counted.sql (no sort) and asks this one only
-- when that found no event, so had no row to carry the counter.
SELECT c.last_event_id, r.*
FROM event_counter AS c
LEFT JOIN LATERAL ({events}
) AS r (event_id, stream_uuid, stream_version, event_type, correlation_id, causation_id,
        data, metadata, created_at, event_uuid, event_number, subject, forgotten) ON true
WHERE c.id = 1
ORDER BY r.event_id;
