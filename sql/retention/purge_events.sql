-- One bounded batch of a stream's hidden events: those at positions `start` <= position <
-- `stop` (at most `batch` positions, all below the first readable one; retention/purge_start.sql
-- found `start`), by one range scan of (stream_id, stream_version). A stream's positions are
-- shared by its events and its links, so the range holds at most `stop - start` rows of both
-- together. Row locks only: appends carry on. Their event_ids come back for
-- retention/purge_references.sql.
DELETE FROM events AS e
WHERE e.stream_id = %(stream_id)s
  AND e.stream_version >= %(start)s AND e.stream_version < %(stop)s
RETURNING e.event_id;
