-- The scavenger's next streams to look at: those with something hidden or a limit (the
-- partial index streams_retention_idx), after stream_id `after`, with their first readable
-- position (retention/first_version.sql): every row below it may go.
SELECT s.stream_id, {first_version}
FROM streams AS s
WHERE (s.first_version > 1 OR s.max_count IS NOT NULL OR s.max_age IS NOT NULL)
  AND s.stream_id > %(after)s
ORDER BY s.stream_id
LIMIT %(limit)s;
