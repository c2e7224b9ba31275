INSERT INTO subscriptions (stream_uuid, subscription_name, last_seen)
VALUES (%(stream_uuid)s, %(subscription_name)s, %(last_seen)s)
ON CONFLICT (stream_uuid, subscription_name) DO NOTHING;
