-- The first event_id after %(after)s whose event is not older than the cutoff: an index scan in
-- event_id order that stops at the first match (the events before it are the ones to archive).
SELECT e.event_id FROM events AS e
WHERE e.event_id > %(after)s AND e.created_at >= now() - %(age)s::interval
ORDER BY e.event_id
LIMIT 1;
