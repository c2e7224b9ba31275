-- An all-streams read forward (read/all_events.sql, filled in below) with the counter in
-- every row, read by the same statement, hence in the same snapshot (one InitPlan; see
-- read/all_covered.sql for why the counter says how far the read covered). The outer
-- ORDER BY is the inner scan's own order: no sort (read/all_covered.sql's join to the
-- counter row sorts every page again, about 0.5 ms per 900 events). A read that returns no
-- event returns no counter either: storage/reader.py read_all_covered then asks
-- read/all_covered.sql, which returns the counter row alone.
SELECT (SELECT c.last_event_id FROM event_counter AS c WHERE c.id = 1), r.*
FROM ({events}
) AS r (event_id, stream_uuid, stream_version, event_type, correlation_id, causation_id,
        data, metadata, created_at, event_uuid, event_number, subject, forgotten)
ORDER BY r.event_id;
