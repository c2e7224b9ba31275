-- The links of a stream to archived events in a range of positions, nearest first.
SELECT k.event_number, k.event_id FROM links AS k
WHERE k.stream_id = %(stream_id)s AND k.event_id <= %(upto)s
  AND k.event_number >= %(low)s AND k.event_number <= %(high)s
ORDER BY k.event_number {dir}
LIMIT %(count)s;
