INSERT INTO streams (stream_uuid) SELECT unnest(%(stream_uuids)s::text[])
ON CONFLICT (stream_uuid) DO NOTHING;
