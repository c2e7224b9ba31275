DELETE FROM parked_events
WHERE stream_uuid = %(stream_uuid)s AND left(subscription_name, %(n)s) = %(prefix)s;
