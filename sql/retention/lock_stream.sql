-- truncate_stream, first step (in a transaction): the stream's row locked against appends to
-- it, its version and its first readable position (retention/first_version.sql).
SELECT s.stream_id, s.stream_version, {first_version}
FROM streams AS s
WHERE s.stream_uuid = %(stream_uuid)s
FOR UPDATE;
