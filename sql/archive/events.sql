-- The events to write to a Parquet file, in event_id order, with the columns of the file.
SELECT e.event_id, s.stream_uuid, e.stream_version, e.event_uuid, e.event_type,
       e.correlation_id, e.causation_id, e.data, e.metadata, e.subject, e.created_at
FROM events AS e JOIN streams AS s ON s.stream_id = e.stream_id
WHERE e.event_id >= %(low)s AND e.event_id <= %(high)s
ORDER BY e.event_id;
