-- One append to one stream in one statement (the common, uncontended case): lock and
-- advance the counter, check and advance the stream, insert the events numbered from the
-- locked counter, notify. The stream step (stream_new, stream_existing, stream_exists or
-- stream_any.sql) returns the stream's id and its version before the append; when the
-- expected version does not hold it returns nothing, so the insert meets a NULL stream_id
-- and fails: nothing commits. The check placeholder is empty, or for events with a data subject a
-- condition calling refuse_forgotten_subjects once, after the counter row lock (an
-- uncorrelated subquery of c: c's UPDATE runs first), see sql/migrations/v4.sql.
WITH c AS (
    UPDATE event_counter SET last_event_id = last_event_id + %(n)s WHERE id = 1
    RETURNING last_event_id - %(n)s AS base, now() AS ts
),
s AS ({stream}),
e AS (
    INSERT INTO events (event_id, stream_id, stream_version, event_type, correlation_id,
                        causation_id, data, metadata, created_at, event_uuid, subject)
    SELECT c.base + u.ord, s.stream_id, s.version + u.ord, u.event_type, u.correlation_id,
           u.causation_id, u.data, u.metadata, c.ts, u.event_uuid, u.subject
    FROM c LEFT JOIN s ON true,
         unnest(%(event_types)s::text[], %(correlation_ids)s::text[], %(causation_ids)s::text[],
                %(data)s::bytea[], %(metadata)s::bytea[], %(event_uuids)s::uuid[],
                %(subjects)s::text[])
             WITH ORDINALITY AS u(event_type, correlation_id, causation_id, data, metadata,
                                  event_uuid, subject, ord){check}
)
SELECT c.base + 1, c.ts, s.version,
       pg_notify(%(channel)s, (c.base + 1) || ',' || (c.base + %(n)s) || ',' || %(origin)s)
FROM c LEFT JOIN s ON true;
