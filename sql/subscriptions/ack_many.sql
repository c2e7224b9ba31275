-- The shared lock connection's checkpoint writes, one statement for all (checkpoints only
-- move forward).
UPDATE subscriptions AS s SET last_seen = v.last_seen, last_ack_at = now()
FROM unnest(%(stream_uuids)s::text[], %(subscription_names)s::text[], %(positions)s::bigint[])
  AS v(stream_uuid, subscription_name, last_seen)
WHERE s.stream_uuid = v.stream_uuid AND s.subscription_name = v.subscription_name
  AND s.last_seen < v.last_seen;
