SELECT e.event_id, s.stream_uuid, e.stream_version, e.event_type, e.correlation_id,
       e.causation_id, e.data, e.metadata, e.created_at, e.event_uuid, e.event_id
FROM events AS e JOIN streams AS s ON s.stream_id = e.stream_id
WHERE e.event_id >= %(start_event_id)s AND e.event_id <= %(end_event_id)s
ORDER BY e.event_id
LIMIT %(count)s;
