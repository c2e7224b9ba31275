SELECT last_seen FROM subscriptions
WHERE stream_uuid = %(stream_uuid)s AND subscription_name = %(subscription_name)s;
