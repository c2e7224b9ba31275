-- Session-level: held while the dedicated connection lives, released when it dies. The shared
-- lock beside it marks the session as one of schema version 3 or later, which reads past the
-- gaps that hard deletes leave (see delete/older_holders.sql); it is never taken exclusively.
SELECT pg_try_advisory_lock(hashtextextended(%(key)s, 0))
       AND pg_try_advisory_lock_shared(hashtextextended('eventstore_actors: reads past gaps', 0));
