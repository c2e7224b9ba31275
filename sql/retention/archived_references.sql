-- The scavenger's sweep of archived references (storage/retention_archived.py): up to
-- `limit` distinct event_ids above `after` that links or parked entries name and the events
-- table no longer holds, within the archived ranges (up to the manifest's highest event_id):
-- events moved to Parquet files. The caller asks the files which of them reads no longer
-- return (their stream's retention hides them) and deletes the rows naming those. Two index
-- range scans from `after` (links_event_id_idx, parked_events_event_id_idx), a primary key
-- probe each; no row when nothing is archived.
SELECT r.event_id
FROM ((SELECT DISTINCT k.event_id FROM links AS k
       WHERE k.event_id > %(after)s
         AND k.event_id <= (SELECT max(f.last_event_id) FROM archive_files AS f)
         AND NOT EXISTS (SELECT 1 FROM events AS v WHERE v.event_id = k.event_id)
       ORDER BY k.event_id LIMIT %(limit)s)
      UNION
      (SELECT DISTINCT p.event_id FROM parked_events AS p
       WHERE p.event_id > %(after)s
         AND p.event_id <= (SELECT max(f.last_event_id) FROM archive_files AS f)
         AND NOT EXISTS (SELECT 1 FROM events AS v WHERE v.event_id = p.event_id)
       ORDER BY p.event_id LIMIT %(limit)s)) AS r
ORDER BY r.event_id
LIMIT %(limit)s;
