-- Session-level: held while the dedicated connection lives, released when it dies.
SELECT pg_try_advisory_lock(hashtextextended(%(key)s, 0));
