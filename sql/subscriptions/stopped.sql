-- A subscription that gave up on an error, written once nobody holds it (the caller holds
-- its advisory lock for this transaction): 'stopped' until a subscriber takes it again.
UPDATE subscriptions SET health = 'stopped', health_reason = %(reason)s, health_at = now()
WHERE stream_uuid = %(stream_uuid)s AND subscription_name = %(subscription_name)s;
