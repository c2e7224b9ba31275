-- One call, one transaction (autocommit): see link_events_v5() in migrations/v5.sql. Status 9
-- (archived_ids): those events are archived, nothing was written; storage/links.py looks them
-- up in the files and calls again with the ones found in `archived`.
SELECT status, first_version, actual_version, bad_event_id, archived_ids
FROM link_events_v5(%(stream_uuid)s, %(expected)s, %(event_ids)s::bigint[],
                    %(archived)s::bigint[], %(archived_streams)s::text[],
                    %(archived_created)s::timestamptz[], %(channel)s, %(origin)s);
