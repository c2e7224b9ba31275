SELECT stream_uuid, stream_id, stream_version FROM streams WHERE stream_uuid = ANY(%(stream_uuids)s::text[]);
