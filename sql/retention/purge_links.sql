-- The same batch's hidden links (positions `start` <= position < `stop` of the linking stream),
-- by one range scan of the links primary key, as retention/purge_events.sql.
DELETE FROM links AS k
WHERE k.stream_id = %(stream_id)s
  AND k.event_number >= %(start)s AND k.event_number < %(stop)s;
