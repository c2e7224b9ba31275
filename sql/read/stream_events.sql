-- One stream's events from a position on, in position order: its own events (position =
-- stream_version) merged with the events it links to (position = links.event_number; a
-- linked event keeps its own stream_uuid and stream_version). Each part is one index range
-- scan in position order cut at `count` (the linked events are then fetched one by one by
-- primary key: OFFSET 0 keeps that lookup a nested loop); a Merge Append combines them, so
-- reading the first or last few events of a long stream touches only those rows.
-- storage/reader.py fills in the comparison and the direction: ">=" and
-- ASC forward, "<=" and DESC backward. With live_only, a soft-deleted stream reads as no
-- rows (the caller then asks stream_state why). The filters filled in (empty, or a
-- condition on the event type for filtered subscriptions) apply before each part's LIMIT, so
-- a read that comes back short really reached the end of what matches. Retention (schema
-- v4, storage/retention.py): positions below the stream's first readable one or older than
-- its max_age are left out by each part's index condition and filter, and so is a linked
-- event hidden by its own stream's retention (before the LIMIT, like a filter).
-- A link whose event is archived (moved to a Parquet file) comes back with its position and
-- NULL columns: the archive fills it in (lifecycle/archive/reader.py), or it is dropped.
-- The last two columns: the event's data subject, and the forget generation of the
-- statement's snapshot (schema v5): one InitPlan per statement, not a probe of
-- forgotten_subjects per row, run only when a row has a subject (NULL otherwise); the key
-- cache compares it with its own (lifecycle/encryption.py, Keyring).
SELECT r.*, CASE WHEN r.subject IS NOT NULL THEN (SELECT g.generation FROM forget_generation AS g WHERE g.id = 1) END
FROM (
    (SELECT e.event_id, %(stream_uuid)s::text, e.stream_version, e.event_type,
            e.correlation_id, e.causation_id, e.data, e.metadata, e.created_at, e.event_uuid,
            e.stream_version AS event_number, e.subject
     FROM events AS e
     WHERE e.stream_id = (SELECT s.stream_id FROM streams AS s
                          WHERE s.stream_uuid = %(stream_uuid)s
                            AND (s.deleted_at IS NULL OR NOT %(live_only)s))
       AND e.stream_version {cmp} %(start)s
       AND e.stream_version >= (SELECT greatest(s.first_version,
                                                s.stream_version - coalesce(s.max_count, s.stream_version) + 1)
                                FROM streams AS s WHERE s.stream_uuid = %(stream_uuid)s)
       AND e.created_at >= (SELECT coalesce(now() - s.max_age, '-infinity')
                            FROM streams AS s WHERE s.stream_uuid = %(stream_uuid)s){filters}
     ORDER BY e.stream_version {dir}
     LIMIT %(count)s)
    UNION ALL
    (SELECT e.event_id, e.stream_uuid, e.stream_version, e.event_type,
            e.correlation_id, e.causation_id, e.data, e.metadata, e.created_at, e.event_uuid,
            l.event_number, e.subject
     FROM (SELECT k.event_number, k.event_id FROM links AS k
           WHERE k.stream_id = (SELECT s.stream_id FROM streams AS s
                                WHERE s.stream_uuid = %(stream_uuid)s
                                  AND (s.deleted_at IS NULL OR NOT %(live_only)s))
             AND k.event_number {cmp} %(start)s
             AND k.event_number >= (SELECT greatest(s.first_version,
                                                    s.stream_version - coalesce(s.max_count, s.stream_version) + 1)
                                    FROM streams AS s WHERE s.stream_uuid = %(stream_uuid)s)
             AND k.created_at >= (SELECT coalesce(now() - s.max_age, '-infinity')
                                  FROM streams AS s WHERE s.stream_uuid = %(stream_uuid)s)
             AND NOT EXISTS (SELECT 1 FROM events AS v JOIN streams AS w ON w.stream_id = v.stream_id
                             WHERE v.event_id = k.event_id
                               AND (v.stream_version < greatest(w.first_version,
                                       w.stream_version - coalesce(w.max_count, w.stream_version) + 1)
                                    OR v.created_at < now() - w.max_age)){link_filters}
           ORDER BY k.event_number {dir}
           LIMIT %(count)s) AS l
     LEFT JOIN LATERAL (
         SELECT x.event_id, o.stream_uuid, x.stream_version, x.event_type, x.correlation_id,
                x.causation_id, x.data, x.metadata, x.created_at, x.event_uuid, x.subject
         FROM events AS x JOIN streams AS o ON o.stream_id = x.stream_id
         WHERE x.event_id = l.event_id
         OFFSET 0) AS e ON true
     ORDER BY l.event_number {dir})
) AS r (event_id, stream_uuid, stream_version, event_type, correlation_id, causation_id, data,
        metadata, created_at, event_uuid, event_number, subject)
ORDER BY r.event_number {dir}
LIMIT %(count)s;
