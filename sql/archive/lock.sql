-- One archiver at a time per schema (a session lock, held across the archive's transactions;
-- a second archive waits for the first).
SELECT pg_advisory_lock(hashtextextended('eventstore_actors.archive.' || current_schema(), 0));
