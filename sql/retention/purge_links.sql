-- One bounded batch of a stream's hidden links (position below `bound`).
DELETE FROM links AS k
WHERE k.stream_id = %(stream_id)s
  AND k.event_number IN (SELECT l.event_number FROM links AS l
                         WHERE l.stream_id = %(stream_id)s AND l.event_number < %(bound)s
                         ORDER BY l.event_number
                         LIMIT %(batch)s);
