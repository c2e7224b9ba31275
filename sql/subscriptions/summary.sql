-- The store at a glance, for `eventstore-actors status`.
SELECT (SELECT max(version) FROM schema_version),
       (SELECT last_event_id FROM event_counter WHERE id = 1),
       (SELECT count(*) FROM streams);
