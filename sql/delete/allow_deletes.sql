-- Within a hard delete's transaction: whether the links trigger (refuse_event_change in
-- sql/migrations/v2.sql) lets a DELETE through, for this transaction only.
SELECT set_config('eventstore_actors.hard_delete', %(on)s, true);
