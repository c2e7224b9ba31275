-- What is stored under these event UUIDs, to tell a retry of the same events from another
-- event reusing a UUID: event_uuid, event_type, data, metadata (as serialized).
SELECT event_uuid, event_type, data, metadata
FROM events WHERE event_uuid = ANY(%(event_uuids)s::uuid[]);
