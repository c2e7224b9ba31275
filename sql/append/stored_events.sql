-- Events already stored under any of these UUIDs (idempotent retries), read under the
-- counter lock: event_uuid, stream_id, stream_version, event_id.
SELECT event_uuid, stream_id, stream_version, event_id
FROM events WHERE event_uuid = ANY(%(event_uuids)s::uuid[]);
