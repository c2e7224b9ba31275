-- A hard delete in a store with archived events, in delete_stream()'s transaction and after
-- it (storage/deletes.py; bracketed by set_config('eventstore_actors.hard_delete') that the
-- links trigger asks for): the links of other streams to the deleted stream's archived events
-- (the function's own join through events cannot find them).
DELETE FROM links AS k WHERE k.event_id = ANY(%(ids)s::bigint[]);
