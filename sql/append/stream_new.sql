INSERT INTO streams (stream_uuid, stream_version) VALUES (%(stream_uuid)s, %(n)s)
ON CONFLICT (stream_uuid) DO NOTHING
RETURNING stream_id, 0::bigint AS version
