-- Written by the subscription that has just taken the name's lock: who holds it (the lock
-- itself, in pg_locks, says whether anyone still does). A new holder (another store
-- instance) starts with a clean health: what the earlier holder wrote ('stopped', 'stalled',
-- 'live') is over, and that holder can no longer write (its writes name it). A run of the
-- same holder leaves the health columns alone: its own monitor writes the new run's state on
-- its next look (subscriptions/health.py), and a clear here could land after that write (a
-- race the monitor would not see).
UPDATE subscriptions SET holder = %(holder)s, health = NULL, health_reason = NULL,
                         health_at = NULL
WHERE stream_uuid = %(stream_uuid)s AND subscription_name = %(subscription_name)s
  AND holder IS DISTINCT FROM %(holder)s;
