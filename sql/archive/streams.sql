-- The streams rows behind archived events: an archived event is live while its stream exists
-- and was created no later than the event (a hard-deleted stream, or one deleted and created
-- again, hides it as a hard delete hides rows).
SELECT s.stream_uuid, s.created_at FROM streams AS s WHERE s.stream_uuid = ANY(%(uuids)s);
