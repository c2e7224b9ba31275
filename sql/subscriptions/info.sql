-- Every durable subscription (or one, by name and stream), with the head of what it follows
-- and how many of its events are parked. Whether it is held now comes from pg_locks.
SELECT s.stream_uuid, s.subscription_name, s.last_seen, s.holder,
       CASE WHEN s.stream_uuid = '$all'
            THEN (SELECT c.last_event_id FROM event_counter AS c WHERE c.id = 1)
            ELSE coalesce((SELECT st.stream_version FROM streams AS st
                           WHERE st.stream_uuid = s.stream_uuid), 0)
       END AS head,
       (SELECT count(*) FROM parked_events AS p
        WHERE p.stream_uuid = s.stream_uuid
          AND p.subscription_name = s.subscription_name) AS parked
FROM subscriptions AS s
WHERE %(name)s::text IS NULL
   OR (s.stream_uuid = %(stream_uuid)s AND s.subscription_name = %(name)s)
ORDER BY s.stream_uuid, s.subscription_name;
