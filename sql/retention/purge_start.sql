-- Where a scavenger batch starts: the lowest position of the stream still stored at or above
-- `low` (its own events and its links; NULL: none). Everything below `low` is already gone, so
-- both probes start past what earlier batches deleted: the dead index entries they left until
-- vacuum are never walked again (from the stream's start, each batch walked all of them).
SELECT least(
    (SELECT e.stream_version FROM events AS e
     WHERE e.stream_id = %(stream_id)s AND e.stream_version >= %(low)s
     ORDER BY e.stream_version LIMIT 1),
    (SELECT k.event_number FROM links AS k
     WHERE k.stream_id = %(stream_id)s AND k.event_number >= %(low)s
     ORDER BY k.event_number LIMIT 1));
