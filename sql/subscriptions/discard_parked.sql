-- Parked events taken off a subscription's list for good (EventStore.forget_parked): every
-- one, or those whose event_id is in `event_ids`. A replay under way that already read one
-- may still deliver it once; its ack then finds nothing to delete. The count is of those
-- parked_events listed (their event still in the events table): an entry whose event was
-- archived goes too, uncounted.
WITH gone AS (
    DELETE FROM parked_events
    WHERE stream_uuid = %(stream_uuid)s AND subscription_name = %(name)s
      AND (%(event_ids)s::bigint[] IS NULL OR event_id = ANY(%(event_ids)s::bigint[]))
    RETURNING event_id
)
SELECT count(*) FROM gone AS g WHERE EXISTS (SELECT 1 FROM events AS e WHERE e.event_id = g.event_id);
