-- One bounded batch of a stream's hidden events (position below `bound`, its first readable
-- one): at most `batch` rows, found by a range scan of (stream_id, stream_version) and
-- deleted by primary key, with what a hard delete removes with them: links to them from
-- other streams, and parked entries naming them. Row locks only: appends carry on.
WITH doomed AS (
    SELECT e.event_id FROM events AS e
    WHERE e.stream_id = %(stream_id)s AND e.stream_version < %(bound)s
    ORDER BY e.stream_version
    LIMIT %(batch)s
), linked AS (
    DELETE FROM links AS k USING doomed AS d WHERE k.event_id = d.event_id
), parked AS (
    DELETE FROM parked_events AS p USING doomed AS d WHERE p.event_id = d.event_id
)
DELETE FROM events AS e USING doomed AS d WHERE e.event_id = d.event_id;
