-- One bounded batch of archived rows, lowest event_ids first (a reader whose view of the
-- manifest is older sees the gap at the start of what it reads, and looks again). Runs after
-- archive/allow_delete.sql in the same transaction. The batch is a range of the primary
-- key, from `low` up to the batch's last event_id (an InitPlan): a range scan, not a join
-- of the batch's ids against every row of events (a join's plan hashed them and scanned the
-- whole table for every batch: 76 ms per 5,000 rows at 200,000 events, growing with it).
DELETE FROM events AS e
WHERE e.event_id >= %(low)s
  AND e.event_id <= (SELECT max(b.event_id)
                     FROM (SELECT x.event_id FROM events AS x
                           WHERE x.event_id >= %(low)s AND x.event_id <= %(high)s
                           ORDER BY x.event_id LIMIT %(batch)s) AS b);
