-- Taken by the listener of a store with encryption on each connect, held while the session
-- lives (shared: one per process): pg_locks then names the sessions whose processes cache
-- data keys (keys/listeners.sql).
SELECT pg_advisory_lock_shared(hashtextextended(%(key)s, 0));
