-- The first statement of a covered all-streams read (storage/reader.py read_all_covered),
-- in the same REPEATABLE READ snapshot as the events read after it: event_ids are handed out
-- under this row's lock, held to commit, so in one snapshot every event_id up to this value
-- is either visible or hard-deleted, and none above it is visible.
SELECT last_event_id FROM event_counter WHERE id = 1;
