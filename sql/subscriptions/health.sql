-- The state holders wrote (subscriptions.health), several rows in one statement, each only
-- while the row still names that holder (a take-over by another store wins).
UPDATE subscriptions AS s
SET health = v.health, health_reason = v.reason, health_at = now()
FROM unnest(%(stream_uuids)s::text[], %(subscription_names)s::text[], %(healths)s::text[],
            %(reasons)s::text[])
  AS v(stream_uuid, subscription_name, health, reason)
WHERE s.stream_uuid = v.stream_uuid AND s.subscription_name = v.subscription_name
  AND s.holder = %(holder)s
  AND s.health IS DISTINCT FROM v.health;
