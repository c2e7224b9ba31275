-- The state and vouch its holder writes (subscriptions/health.py), several rows in one
-- statement, each only while the row still names that holder (a take-over by another store
-- wins). vouched_until: the database's now plus the seconds the holder vouches for (its
-- stall clock's remainder; at or below 0 once stalled). A row held by another transaction (a
-- subscriber's own, acking in it) is skipped, not waited for: the monitor writes it on a
-- later look (the rows written are returned), and its other rows are not held up meanwhile.
WITH v AS (
    SELECT s.subscription_id, v.health, v.reason, v.remaining
    FROM unnest(%(stream_uuids)s::text[], %(subscription_names)s::text[],
                %(healths)s::text[], %(reasons)s::text[], %(remaining)s::float8[])
        AS v(stream_uuid, subscription_name, health, reason, remaining)
    JOIN subscriptions AS s
      ON s.stream_uuid = v.stream_uuid AND s.subscription_name = v.subscription_name
    WHERE s.holder = %(holder)s
    FOR UPDATE OF s SKIP LOCKED
)
UPDATE subscriptions AS s
SET health = v.health, health_reason = v.reason,
    health_at = CASE WHEN s.health IS DISTINCT FROM v.health THEN statement_timestamp()
                     ELSE s.health_at END,
    vouched_until = statement_timestamp() + make_interval(secs => v.remaining),
    vouched_by = %(holder)s
FROM v
WHERE s.subscription_id = v.subscription_id
RETURNING s.stream_uuid, s.subscription_name;
