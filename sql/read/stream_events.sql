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
-- a read that comes back short really reached the end of what matches. A link whose event
-- is archived (moved to a Parquet file) comes back with its position and NULL columns: the
-- archive fills it in (lifecycle/archive/reader.py), or it is dropped.
SELECT r.* FROM (
    (SELECT e.event_id, %(stream_uuid)s::text, e.stream_version, e.event_type,
            e.correlation_id, e.causation_id, e.data, e.metadata, e.created_at, e.event_uuid,
            e.stream_version AS event_number
     FROM events AS e
     WHERE e.stream_id = (SELECT s.stream_id FROM streams AS s
                          WHERE s.stream_uuid = %(stream_uuid)s
                            AND (s.deleted_at IS NULL OR NOT %(live_only)s))
       AND e.stream_version {cmp} %(start)s{filters}
     ORDER BY e.stream_version {dir}
     LIMIT %(count)s)
    UNION ALL
    (SELECT e.event_id, e.stream_uuid, e.stream_version, e.event_type,
            e.correlation_id, e.causation_id, e.data, e.metadata, e.created_at, e.event_uuid,
            l.event_number
     FROM (SELECT k.event_number, k.event_id FROM links AS k
           WHERE k.stream_id = (SELECT s.stream_id FROM streams AS s
                                WHERE s.stream_uuid = %(stream_uuid)s
                                  AND (s.deleted_at IS NULL OR NOT %(live_only)s))
             AND k.event_number {cmp} %(start)s{link_filters}
           ORDER BY k.event_number {dir}
           LIMIT %(count)s) AS l
     LEFT JOIN LATERAL (
         SELECT x.event_id, o.stream_uuid, x.stream_version, x.event_type, x.correlation_id,
                x.causation_id, x.data, x.metadata, x.created_at, x.event_uuid
         FROM events AS x JOIN streams AS o ON o.stream_id = x.stream_id
         WHERE x.event_id = l.event_id
         OFFSET 0) AS e ON true
     ORDER BY l.event_number {dir})
) AS r (event_id, stream_uuid, stream_version, event_type, correlation_id, causation_id, data,
        metadata, created_at, event_uuid, event_number)
ORDER BY r.event_number {dir}
LIMIT %(count)s;
