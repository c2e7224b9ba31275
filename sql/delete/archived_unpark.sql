-- A hard delete in a store with archived events, in delete_stream()'s transaction: the parked
-- entries (of any subscription) naming the deleted stream's archived events.
DELETE FROM parked_events AS p WHERE p.event_id = ANY(%(ids)s::bigint[]);
