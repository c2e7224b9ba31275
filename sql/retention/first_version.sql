-- The first position of stream `s` still readable (an expression, filled in where a streams
-- row `s` is read): above first_version (hidden for good), the last max_count positions, and
-- with max_age the first position not older than it (own events and links; the stream's
-- version + 1 when none is). Reads apply the same rules row by row (read/all_events.sql,
-- read/stream_events.sql); the age part walks an index from first_version, which the
-- scavenger keeps short by deleting what lies below. The age part sees the tables only: a
-- stream's own archived events (in Parquet files, their created_at with them) are not there,
-- so with max_age the first readable position may be lower than this, at a young archived
-- event. Where that matters the caller asks the archive (Overlay.first_readable,
-- lifecycle/archive/reader.py): stream_info and pages, status, truncate_stream and
-- set_stream_retention (retention/set_limits_at.sql). The scavenger's bound needs no more:
-- every row still in the tables below it is hidden.
greatest(
    s.first_version,
    s.stream_version - coalesce(s.max_count, s.stream_version) + 1,
    CASE WHEN s.max_age IS NULL THEN 1 ELSE coalesce(least(
        (SELECT a.stream_version FROM events AS a
         WHERE a.stream_id = s.stream_id AND a.stream_version >= s.first_version
           AND a.created_at >= now() - s.max_age
         ORDER BY a.stream_version LIMIT 1),
        (SELECT b.event_number FROM links AS b
         WHERE b.stream_id = s.stream_id AND b.event_number >= s.first_version
           AND b.created_at >= now() - s.max_age
         ORDER BY b.event_number LIMIT 1)), s.stream_version + 1) END)
