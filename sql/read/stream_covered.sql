-- A stream read forward (read/stream_events.sql, filled in below) and, in the same
-- statement, hence the same snapshot, the stream's version and whether it is soft-deleted: a
-- stream's version moves in the transaction that writes its events or links, so in one
-- snapshot every position up to it is either visible or gone (a hard-deleted linked event)
-- (storage/reader.py read_stream_covered). One row comes back even when no event does
-- (event_id NULL); version NULL: no such stream.
SELECT h.version, h.deleted, r.*
FROM (SELECT (SELECT s.stream_version FROM streams AS s
              WHERE s.stream_uuid = %(stream_uuid)s) AS version,
             (SELECT s.deleted_at IS NOT NULL FROM streams AS s
              WHERE s.stream_uuid = %(stream_uuid)s) AS deleted) AS h
LEFT JOIN LATERAL ({events}
) AS r (event_id, stream_uuid, stream_version, event_type, correlation_id, causation_id,
        data, metadata, created_at, event_uuid, event_number, subject, forgotten) ON true
ORDER BY r.event_number;
