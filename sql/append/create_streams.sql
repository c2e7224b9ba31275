-- New streams, each at the version it reaches if every write to it in this batch holds (the
-- appender corrects the rare one that does not): no second UPDATE of the row, whose
-- stream_version is indexed, for the usual new stream. RETURNING: the rows created here.
INSERT INTO streams (stream_uuid, stream_version)
SELECT * FROM unnest(%(stream_uuids)s::text[], %(stream_versions)s::bigint[])
ON CONFLICT (stream_uuid) DO NOTHING
RETURNING stream_id, stream_version;
