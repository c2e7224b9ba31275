-- Checkpoints only move forward.
UPDATE subscriptions SET last_seen = %(last_seen)s
WHERE stream_uuid = %(stream_uuid)s AND subscription_name = %(subscription_name)s
  AND last_seen < %(last_seen)s;
