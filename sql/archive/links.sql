-- The links of a stream to archived events in a range of positions, nearest first: those its
-- retention leaves readable (its first readable position, and its max_age on the links' own
-- created_at), as read/stream_events.sql reads the links to events still in PostgreSQL.
SELECT k.event_number, k.event_id
FROM links AS k JOIN streams AS s ON s.stream_id = k.stream_id
WHERE k.stream_id = %(stream_id)s AND k.event_id <= %(upto)s
  AND k.event_number >= %(low)s AND k.event_number <= %(high)s
  AND k.event_number >= greatest(s.first_version,
                                 s.stream_version - coalesce(s.max_count, s.stream_version) + 1)
  AND k.created_at >= coalesce(now() - s.max_age, '-infinity')
ORDER BY k.event_number {dir}
LIMIT %(count)s;
