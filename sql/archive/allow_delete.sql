-- The immutability trigger lets this transaction delete events (as a hard delete does).
SELECT set_config('eventstore_actors.hard_delete', 'on', true);
