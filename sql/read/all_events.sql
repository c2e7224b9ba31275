-- Events of every stream with low <= event_id <= high, in event_id order, at most `count`:
-- one range scan of the events primary key (forward or backward), each row joined to its
-- stream by primary key. Gaps left by hard-deleted events are simply not there.
-- storage/reader.py fills in the optional conditions on the event type and the stream_uuid
-- prefix, and the direction (ASC or DESC). Events hidden by their stream's retention (schema
-- v4: below first_version, beyond max_count, older than max_age) are skipped like deleted
-- ones, checked on the stream row the join reads anyway (storage/retention.py).
-- The last two columns: the data subject, and the forget generation of the statement's
-- snapshot (schema v5): one InitPlan per statement, not a probe of forgotten_subjects per
-- row, run only when a row has a subject (NULL otherwise); the key cache compares it with
-- its own (lifecycle/encryption.py, Keyring).
SELECT e.event_id, s.stream_uuid, e.stream_version, e.event_type, e.correlation_id,
       e.causation_id, e.data, e.metadata, e.created_at, e.event_uuid, e.event_id, e.subject,
       CASE WHEN e.subject IS NOT NULL THEN (SELECT g.generation FROM forget_generation AS g WHERE g.id = 1) END
FROM events AS e JOIN streams AS s ON s.stream_id = e.stream_id
WHERE e.event_id >= %(low)s AND e.event_id <= %(high)s
  AND e.stream_version >= greatest(s.first_version,
                                   s.stream_version - coalesce(s.max_count, s.stream_version) + 1)
  AND (s.max_age IS NULL OR e.created_at >= now() - s.max_age){filters}
ORDER BY e.event_id {dir}
LIMIT %(count)s;
