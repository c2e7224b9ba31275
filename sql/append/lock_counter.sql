-- Taken first in every append transaction and held until commit: serialises appends from
-- every process so that global ids are gap-free and in commit order.
SELECT last_event_id, now() FROM event_counter WHERE id = 1 FOR UPDATE;
