-- One bounded batch of a stream's hidden events (position below `bound`, its first readable
-- one): the lowest `batch` of them, by one range scan of (stream_id, stream_version) cut at
-- the position of the one after them (an init plan: the scan's own bound, no join, whatever
-- the size of the table). Row locks only: appends carry on. Their event_ids come back for
-- retention/purge_references.sql.
DELETE FROM events AS e
WHERE e.stream_id = %(stream_id)s
  AND e.stream_version < least(%(bound)s::bigint,
                               (SELECT n.stream_version FROM events AS n
                                WHERE n.stream_id = %(stream_id)s
                                  AND n.stream_version < %(bound)s
                                ORDER BY n.stream_version
                                OFFSET %(batch)s LIMIT 1))
RETURNING e.event_id;
