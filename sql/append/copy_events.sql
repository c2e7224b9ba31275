COPY events (event_id, stream_id, stream_version, event_type, correlation_id, causation_id,
             data, metadata, created_at, event_uuid, subject)
FROM STDIN (FORMAT BINARY);
