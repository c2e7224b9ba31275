-- Written by the subscription that has just taken the name's lock: who holds it (the lock
-- itself, in pg_locks, says whether anyone still does). A new holder starts with a clean
-- health (what an earlier holder wrote, 'stopped' or 'stalled', is over).
UPDATE subscriptions SET holder = %(holder)s, health = NULL, health_reason = NULL,
                         health_at = NULL
WHERE stream_uuid = %(stream_uuid)s AND subscription_name = %(subscription_name)s
  AND (holder IS DISTINCT FROM %(holder)s OR health IS NOT NULL);
