-- A hard delete in a store with archived events (storage/deletes.py): the event_ids that
-- links and parked entries name but the events table no longer holds, within the archived
-- ranges: events moved to Parquet files (or removed earlier). The caller asks the files which
-- of them are the deleted stream's. No row at all when nothing is archived: a NULL first
-- column then (the plain delete suffices). Index scans of links_event_id_idx and
-- parked_events_event_id_idx over the archived range, a primary key probe each.
WITH archived AS (
    SELECT min(f.first_event_id) AS low, max(f.last_event_id) AS high FROM archive_files AS f
)
SELECT a.low, r.event_id
FROM archived AS a
LEFT JOIN LATERAL (
    SELECT k.event_id FROM links AS k
    WHERE k.event_id BETWEEN a.low AND a.high
      AND NOT EXISTS (SELECT 1 FROM events AS v WHERE v.event_id = k.event_id)
    UNION
    SELECT p.event_id FROM parked_events AS p
    WHERE p.event_id BETWEEN a.low AND a.high
      AND NOT EXISTS (SELECT 1 FROM events AS v WHERE v.event_id = p.event_id)
) AS r ON true;
