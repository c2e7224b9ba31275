-- One call, one transaction (autocommit): see link_events() in migrations/v2.sql.
SELECT status, first_version, actual_version, bad_event_id
FROM link_events(%(stream_uuid)s, %(expected)s, %(event_ids)s::bigint[], %(channel)s,
                 %(origin)s);
