-- Every durable subscription (or one, by name and stream), with the head of what it follows
-- and how many of its events are parked (those still in the events table, as parked_events
-- returns them: an archived parked event is no longer listed). Whether it is held now comes
-- from pg_locks.
-- Health: the age of the oldest event after the stored checkpoint in the tables (its
-- created_at, or for a linked one the link's; one index probe each), when the checkpoint last
-- moved, and what its holder last wrote. Archived events are in the files, not here: the last
-- three columns tell subscriptions/info.py whether the first unacked position may be one of
-- them (then it reads its created_at from the file): the first unacked position the tables
-- hold (an event_id for $all, the version of the stream's first own event after the
-- checkpoint otherwise; NULL: none), the highest archived event_id (NULL: nothing archived,
-- one probe of the manifest's key), and the time the ages are counted to. Each subscription
-- row probes its stream, events and links by key (the LATERAL subqueries, kept apart from the
-- join order by their LIMIT). Last, what a reader needs to find a stall without the holder
-- (subscriptions/health.py, `overdue`): the holder's stall_after, and how long ago the vouch
-- of the current holder ran out (negative: not yet; NULL: none by this holder, e.g. one of
-- release 5).
SELECT s.stream_uuid, s.subscription_name, s.last_seen, s.holder,
       CASE WHEN s.stream_uuid = '$all'
            THEN (SELECT c.last_event_id FROM event_counter AS c WHERE c.id = 1)
            ELSE coalesce(st.stream_version, 0)
       END AS head,
       (SELECT count(*) FROM parked_events AS p
        WHERE p.stream_uuid = s.stream_uuid
          AND p.subscription_name = s.subscription_name
          AND EXISTS (SELECT 1 FROM events AS e WHERE e.event_id = p.event_id)) AS parked,
       extract(epoch FROM clock_timestamp() - CASE
           WHEN s.stream_uuid = '$all' THEN a.created_at
           ELSE least(o.created_at, k.created_at)
       END)::float8 AS lag_seconds,
       s.last_ack_at, s.health, s.health_reason,
       CASE WHEN s.stream_uuid = '$all' THEN a.event_id ELSE o.stream_version END AS first_held,
       (SELECT f.last_event_id FROM archive_files AS f
        ORDER BY f.first_event_id DESC LIMIT 1) AS archived_upto,
       clock_timestamp() AS read_at,
       s.stall_after,
       CASE WHEN s.vouched_by = s.holder
            THEN extract(epoch FROM clock_timestamp() - s.vouched_until)::float8
       END AS unvouched_for
FROM subscriptions AS s
LEFT JOIN LATERAL (SELECT st.stream_id, st.stream_version FROM streams AS st
                   WHERE s.stream_uuid <> '$all' AND st.stream_uuid = s.stream_uuid
                   LIMIT 1) AS st ON true  -- LIMIT: a probe per row, never a scan of streams
LEFT JOIN LATERAL (SELECT e.event_id, e.created_at FROM events AS e
                   WHERE s.stream_uuid = '$all' AND e.event_id > s.last_seen
                   ORDER BY e.event_id LIMIT 1) AS a ON true
LEFT JOIN LATERAL (SELECT e.stream_version, e.created_at FROM events AS e
                   WHERE e.stream_id = st.stream_id AND e.stream_version > s.last_seen
                   ORDER BY e.stream_version LIMIT 1) AS o ON true
LEFT JOIN LATERAL (SELECT k.created_at FROM links AS k
                   WHERE k.stream_id = st.stream_id AND k.event_number > s.last_seen
                   ORDER BY k.event_number LIMIT 1) AS k ON true
WHERE %(name)s::text IS NULL
   OR (s.stream_uuid = %(stream_uuid)s AND s.subscription_name = %(name)s)
ORDER BY s.stream_uuid, s.subscription_name;
