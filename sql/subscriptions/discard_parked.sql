-- Parked events taken off a subscription's list for good (EventStore.forget_parked): every
-- one, or those whose event_id is in `event_ids`. A replay under way that already read one
-- may still deliver it once; its ack then finds nothing to delete.
DELETE FROM parked_events
WHERE stream_uuid = %(stream_uuid)s AND subscription_name = %(name)s
  AND (%(event_ids)s::bigint[] IS NULL OR event_id = ANY(%(event_ids)s::bigint[]));
