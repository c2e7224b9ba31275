-- One call, one transaction (autocommit): see delete_stream() in migrations/v2.sql.
SELECT status, actual_version
FROM delete_stream(%(stream_uuid)s, %(expected)s, %(hard)s, %(channel)s, %(origin)s);
