-- First statement of a scavenger batch (a transaction; retention/purge.sql follows): allow
-- the deletes that the triggers refuse outside hard deletes (sql/migrations/v2.sql,
-- refuse_event_change), for this transaction only; and commit it without waiting for its WAL
-- to reach the disk, so that the appends' own commits never queue behind the scavenger's
-- flush (losing a batch in a crash loses nothing: the rows are still hidden, and the next
-- pass deletes them again).
SELECT set_config('eventstore_actors.hard_delete', 'on', true),
       set_config('synchronous_commit', 'off', true);
