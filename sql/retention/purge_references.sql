-- What a hard delete removes with events, for the event_ids a batch deleted: links to them
-- from other streams (index links_event_id_idx) and the parked entries naming them.
WITH parked AS (
    DELETE FROM parked_events AS p WHERE p.event_id = ANY(%(event_ids)s::bigint[])
)
DELETE FROM links AS k WHERE k.event_id = ANY(%(event_ids)s::bigint[]);
