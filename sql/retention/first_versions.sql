-- The first readable position (retention/first_version.sql) of the streams named.
SELECT s.stream_uuid, {first_version}
FROM streams AS s
WHERE s.stream_uuid = ANY(%(streams)s);
