-- The subscription rows of one stream whose names start with a prefix (a consumer group's
-- partitions).
SELECT subscription_name FROM subscriptions
WHERE stream_uuid = %(stream_uuid)s AND left(subscription_name, %(n)s) = %(prefix)s
ORDER BY subscription_name;
