-- The streams rows behind archived events: an archived event is live while its stream exists
-- and was created no later than the event (a hard-deleted stream, or one deleted and created
-- again, hides it as a hard delete hides rows), and while its stream's retention keeps it:
-- the lowest version still readable, and the oldest created_at (NULL: no max_age), as the
-- read statements compute them (storage/retention.py).
SELECT s.stream_uuid, s.created_at,
       greatest(s.first_version, s.stream_version - coalesce(s.max_count, s.stream_version) + 1),
       now() - s.max_age
FROM streams AS s WHERE s.stream_uuid = ANY(%(uuids)s);
