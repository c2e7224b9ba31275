-- What a stream read needs to fill positions from the archive: the stream, its version,
-- whether it is soft-deleted, and the lowest version of its own events still in events
-- (own events older than that are archived, at positions that are not links).
SELECT s.stream_id, s.stream_version, s.created_at, s.deleted_at IS NOT NULL,
       (SELECT min(e.stream_version) FROM events AS e WHERE e.stream_id = s.stream_id)
FROM streams AS s WHERE s.stream_uuid = %(stream_uuid)s;
