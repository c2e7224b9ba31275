-- Written by the subscription that has just taken the name's lock: who holds it (the lock
-- itself, in pg_locks, says whether anyone still does).
UPDATE subscriptions SET holder = %(holder)s
WHERE stream_uuid = %(stream_uuid)s AND subscription_name = %(subscription_name)s
  AND holder IS DISTINCT FROM %(holder)s;
