-- Transaction-level: serializes the callers of one key until the transaction ends.
SELECT pg_advisory_xact_lock(hashtextextended(%(key)s, 0));
