-- Written by the subscription that has just taken the name's lock: who holds it (the lock
-- itself, in pg_locks, says whether anyone still does), its stall_after, and a first vouch
-- (subscriptions/health.py): nothing is delivered yet in this run, so nothing can stall
-- before stall_after from now; its monitor renews the vouch from its first look on.
-- A new holder (another store instance) starts with a clean health: what the earlier holder
-- wrote ('stopped', 'stalled', 'live') is over, and that holder can no longer write (its
-- writes name it). A run of the same holder leaves the state columns alone: its own monitor
-- writes the new run's state on its next look, and a clear here could land after that write
-- (a race the monitor would not see). The vouch may be written over by this claim after the
-- monitor's first write of the run: it is a true one too.
UPDATE subscriptions
SET holder = %(holder)s,
    health = CASE WHEN holder IS DISTINCT FROM %(holder)s THEN NULL ELSE health END,
    health_reason = CASE WHEN holder IS DISTINCT FROM %(holder)s THEN NULL ELSE health_reason END,
    health_at = CASE WHEN holder IS DISTINCT FROM %(holder)s THEN NULL ELSE health_at END,
    stall_after = %(stall_after)s,
    vouched_until = statement_timestamp() + make_interval(secs => %(stall_after)s),
    vouched_by = %(holder)s
WHERE stream_uuid = %(stream_uuid)s AND subscription_name = %(subscription_name)s;
