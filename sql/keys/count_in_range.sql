-- A subject's events still in the events table within an archived range (a range whose rows
-- are still being deleted: they are counted once, from the file).
SELECT count(*) FROM events
WHERE subject = %(subject)s AND event_id >= %(first)s AND event_id <= %(last)s;
