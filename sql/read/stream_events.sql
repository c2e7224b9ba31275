SELECT e.event_id, s.stream_uuid, e.stream_version, e.event_type, e.correlation_id,
       e.causation_id, e.data, e.metadata, e.created_at, e.event_uuid, e.stream_version
FROM streams AS s JOIN events AS e ON e.stream_id = s.stream_id
WHERE s.stream_uuid = %(stream_uuid)s AND e.stream_version >= %(start_version)s
ORDER BY e.stream_version
LIMIT %(count)s;
