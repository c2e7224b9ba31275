-- Released explicitly before closing: a closed connection's backend may still hold the lock
-- for a moment, and a resubscribe right after would be refused.
SELECT pg_advisory_unlock(hashtextextended(%(key)s, 0));
