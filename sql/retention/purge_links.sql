-- One bounded batch of a stream's hidden links (position below `bound`): the lowest `batch`,
-- by one range scan of the links primary key, cut like retention/purge_events.sql.
DELETE FROM links AS k
WHERE k.stream_id = %(stream_id)s
  AND k.event_number < least(%(bound)s::bigint,
                             (SELECT n.event_number FROM links AS n
                              WHERE n.stream_id = %(stream_id)s AND n.event_number < %(bound)s
                              ORDER BY n.event_number
                              OFFSET %(batch)s LIMIT 1));
