-- First statement of a scavenger batch (a transaction): allow the deletes that the triggers
-- refuse outside hard deletes (sql/migrations/v2.sql, refuse_event_change), for this
-- transaction only, and take the scavenger's lock of this store without waiting (false:
-- another process is scavenging; this one leaves the work to it).
SELECT set_config('eventstore_actors.hard_delete', 'on', true),
       pg_try_advisory_xact_lock(hashtextextended(%(key)s, 0));
