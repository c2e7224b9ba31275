-- First statement of a scavenger batch (a transaction): allow the deletes that the triggers
-- refuse outside hard deletes (sql/migrations/v2.sql, refuse_event_change), for this
-- transaction only; commit it without waiting for its WAL to reach the disk, so that the
-- appends' own commits never queue behind the scavenger's flush (losing a batch in a crash
-- loses nothing: the rows are still hidden, and the next pass deletes them again); and take
-- the scavenger's lock of this store without waiting (false: another process is scavenging;
-- this one leaves the work to it).
SELECT set_config('eventstore_actors.hard_delete', 'on', true),
       pg_try_advisory_xact_lock(hashtextextended(%(key)s, 0)),
       set_config('synchronous_commit', 'off', true);
