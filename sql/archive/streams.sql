-- The streams rows behind archived events: an archived event is live while its stream exists
-- and the event is of the stream's current life (a hard-deleted stream, or one hard-deleted
-- and created again, hides its earlier lives as a hard delete hides rows), and while its
-- stream's retention keeps it: the lowest version still readable, and the oldest created_at
-- (NULL: no max_age), as the read statements compute them (storage/retention.py).
-- The life (see the block stream-lives of migrations/v7.sql, and archived_event_live() there):
-- `after`, the event_ids up to which archived events are of an earlier life (the stream's
-- tombstone; for a stream created since the migration from version 6, at least every event
-- appended before it); `legacy`, the event_ids up to which the rule of version 6 applies too
-- (the stream created no later than the event): 0 in a store created at version 7 or later.
SELECT s.stream_uuid, s.created_at,
       greatest(s.first_version, s.stream_version - coalesce(s.max_count, s.stream_version) + 1),
       now() - s.max_age,
       greatest(coalesce(h.upto, 0),
                CASE WHEN s.stream_id > i.legacy_stream_id THEN i.legacy_event_id ELSE 0 END),
       coalesce(i.legacy_event_id, 0)
FROM streams AS s
LEFT JOIN hard_deletes AS h ON h.stream_uuid = s.stream_uuid
LEFT JOIN store_identity AS i ON i.id = 1
WHERE s.stream_uuid = ANY(%(uuids)s);
