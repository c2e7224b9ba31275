-- Checkpoints only move forward; last_ack_at (subscription health) rides along.
UPDATE subscriptions SET last_seen = %(last_seen)s, last_ack_at = now()
WHERE stream_uuid = %(stream_uuid)s AND subscription_name = %(subscription_name)s
  AND last_seen < %(last_seen)s;
