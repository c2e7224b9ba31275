-- One bounded batch of archived rows, lowest event_ids first (a reader whose view of the
-- manifest is older sees the gap at the start of what it reads, and looks again). Runs after
-- archive/allow_delete.sql in the same transaction.
DELETE FROM events AS e
WHERE e.event_id IN (SELECT x.event_id FROM events AS x
                     WHERE x.event_id >= %(low)s AND x.event_id <= %(high)s
                     ORDER BY x.event_id LIMIT %(batch)s);
