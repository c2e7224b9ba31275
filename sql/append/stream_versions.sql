-- Locked: a concurrent soft delete waits for this append's commit, or is seen by it.
SELECT stream_uuid, stream_id, stream_version, deleted_at IS NOT NULL
FROM streams WHERE stream_uuid = ANY(%(stream_uuids)s::text[]) FOR UPDATE;
