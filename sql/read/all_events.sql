-- Events of every stream in the range {range}, in event_id order, at most `count`: one range
-- scan of the events primary key (forward or backward), each row joined to its stream by
-- primary key. Gaps left by hard-deleted events are simply not there.
-- storage/reader.py fills in the range (both bounds, or only the one a read from the first
-- or last event needs: an open range is estimated at a third of the table, a closed one at
-- 0.5 %, and only the first estimate lets a generic plan cache the stream rows, Memoize),
-- the optional conditions on the event type and the stream_uuid prefix, and the direction.
-- {streams} is the join to the stream row; for a consumer group's partition it is a LATERAL
-- subquery that computes the partition (fenced by OFFSET 0, so it stays the inner side):
-- the partition's condition has no statistics, the planner took it to keep one stream in
-- 200, and began from the streams, reading every event of the partition's streams from
-- `low` on and sorting them, for every page (30 ms a page at 20,000 events, 39 ms at
-- 200,000, growing with the store); now the events are read in order, as any read, and
-- each stream's partition is computed once per statement (Memoize).
-- Events hidden by their stream's retention (schema v4: below first_version, beyond
-- max_count, older than max_age) are skipped like deleted ones. The check is a condition on
-- the event row alone, not on the join: a join condition beyond the key would stop the
-- planner from caching the stream rows (each event would look its stream up again, about
-- 0.7 ms per 1,000 events). It looks first, once per statement, whether any stream has
-- retention (the partial index streams_retention_idx: normally empty, so nothing more);
-- when one has, each event probes that index for its stream. Same statement, same snapshot.
-- The last two columns: the data subject, and the forget generation of the statement's
-- snapshot (schema v5): one InitPlan per statement, not a probe of forgotten_subjects per
-- row, run only when a row has a subject (NULL otherwise); the key cache compares it with
-- its own (lifecycle/encryption.py, Keyring).
SELECT e.event_id, s.stream_uuid, e.stream_version, e.event_type, e.correlation_id,
       e.causation_id, e.data, e.metadata, e.created_at, e.event_uuid, e.event_id, e.subject,
       CASE WHEN e.subject IS NOT NULL THEN (SELECT g.generation FROM forget_generation AS g WHERE g.id = 1) END
FROM events AS e {streams}
WHERE {range}
  AND (NOT (SELECT EXISTS (SELECT FROM streams AS rs
                           WHERE rs.first_version > 1 OR rs.max_count IS NOT NULL OR rs.max_age IS NOT NULL))
       OR coalesce((SELECT e.stream_version >= greatest(rs.first_version,
                                                        rs.stream_version - coalesce(rs.max_count, rs.stream_version) + 1)
                           AND (rs.max_age IS NULL OR e.created_at >= now() - rs.max_age)
                    FROM streams AS rs
                    WHERE rs.stream_id = e.stream_id
                      AND (rs.first_version > 1 OR rs.max_count IS NOT NULL OR rs.max_age IS NOT NULL)),
                   true)){filters}
ORDER BY e.event_id {dir}
LIMIT %(count)s;
