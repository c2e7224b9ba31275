-- truncate_stream, with retention/visible_count.sql: the event_ids of the stream's links at
-- positions low <= position < high (not older than its max_age) whose events are no longer in
-- the events table (archived to Parquet, or hard-deleted): the caller asks the archive which
-- of them are readable (lifecycle/retention.py). One range scan of links_pkey.
SELECT k.event_id
FROM streams AS s
JOIN links AS k ON k.stream_id = s.stream_id
WHERE s.stream_id = %(stream_id)s
  AND k.event_number >= %(low)s AND k.event_number < %(high)s
  AND (s.max_age IS NULL OR k.created_at >= now() - s.max_age)
  AND NOT EXISTS (SELECT 1 FROM events AS v WHERE v.event_id = k.event_id)
ORDER BY k.event_number;
