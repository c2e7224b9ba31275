-- truncate_stream and set_stream_retention, first step (in a transaction): the stream's row
-- locked against appends to it, its version, its first readable position
-- (retention/first_version.sql) and its max_age (with one, the archive may hold readable
-- events below that position: storage/retention.py).
SELECT s.stream_id, s.stream_version, {first_version}, s.max_age
FROM streams AS s
WHERE s.stream_uuid = %(stream_uuid)s
FOR UPDATE;
