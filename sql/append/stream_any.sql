-- ANY_VERSION: create the stream or advance it, whatever its version; ON CONFLICT DO UPDATE
-- works on the latest committed row, so racing appenders never lose an update.
INSERT INTO streams (stream_uuid, stream_version) VALUES (%(stream_uuid)s, %(n)s)
ON CONFLICT (stream_uuid) DO UPDATE SET stream_version = streams.stream_version + %(n)s
WHERE streams.deleted_at IS NULL
RETURNING stream_id, stream_version - %(n)s AS version
