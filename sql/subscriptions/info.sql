-- Every durable subscription (or one, by name and stream), with the head of what it follows
-- and how many of its events are parked. Whether it is held now comes from pg_locks.
-- Health: the age of the oldest event after the stored checkpoint (its created_at, or for a
-- linked one the link's; one index probe each), when the checkpoint last moved, and what its
-- holder last wrote.
SELECT s.stream_uuid, s.subscription_name, s.last_seen, s.holder,
       CASE WHEN s.stream_uuid = '$all'
            THEN (SELECT c.last_event_id FROM event_counter AS c WHERE c.id = 1)
            ELSE coalesce((SELECT st.stream_version FROM streams AS st
                           WHERE st.stream_uuid = s.stream_uuid), 0)
       END AS head,
       (SELECT count(*) FROM parked_events AS p
        WHERE p.stream_uuid = s.stream_uuid
          AND p.subscription_name = s.subscription_name) AS parked,
       extract(epoch FROM clock_timestamp() - CASE
           WHEN s.stream_uuid = '$all'
           THEN (SELECT e.created_at FROM events AS e WHERE e.event_id > s.last_seen
                 ORDER BY e.event_id LIMIT 1)
           ELSE (SELECT min(x.at) FROM (
                   (SELECT e.created_at FROM events AS e
                    WHERE e.stream_id = (SELECT st.stream_id FROM streams AS st
                                         WHERE st.stream_uuid = s.stream_uuid)
                      AND e.stream_version > s.last_seen
                    ORDER BY e.stream_version LIMIT 1)
                   UNION ALL
                   (SELECT k.created_at FROM links AS k
                    WHERE k.stream_id = (SELECT st.stream_id FROM streams AS st
                                         WHERE st.stream_uuid = s.stream_uuid)
                      AND k.event_number > s.last_seen
                    ORDER BY k.event_number LIMIT 1)) AS x(at))
       END)::float8 AS lag_seconds,
       s.last_ack_at, s.health, s.health_reason
FROM subscriptions AS s
WHERE %(name)s::text IS NULL
   OR (s.stream_uuid = %(stream_uuid)s AND s.subscription_name = %(name)s)
ORDER BY s.stream_uuid, s.subscription_name;
