-- How many positions low <= position < high of one stream are readable now (its own events
-- and its links to events readable in their own streams), as read/stream_events.sql decides:
-- what truncate_stream hides and reports.
SELECT (SELECT count(*) FROM events AS e
        WHERE e.stream_id = s.stream_id
          AND e.stream_version >= %(low)s AND e.stream_version < %(high)s
          AND (s.max_age IS NULL OR e.created_at >= now() - s.max_age))
     + (SELECT count(*) FROM links AS k
        WHERE k.stream_id = s.stream_id
          AND k.event_number >= %(low)s AND k.event_number < %(high)s
          AND (s.max_age IS NULL OR k.created_at >= now() - s.max_age)
          AND EXISTS (SELECT 1 FROM events AS v JOIN streams AS w ON w.stream_id = v.stream_id
                      WHERE v.event_id = k.event_id
                        AND v.stream_version >= greatest(w.first_version,
                                w.stream_version - coalesce(w.max_count, w.stream_version) + 1)
                        AND (w.max_age IS NULL OR v.created_at >= now() - w.max_age)))
FROM streams AS s
WHERE s.stream_id = %(stream_id)s;
