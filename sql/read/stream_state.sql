-- What a read needs to say why a stream gave no rows: missing, soft-deleted, or just nothing
-- in that range. Also the row behind stream_info.
SELECT stream_uuid, stream_version, created_at, deleted_at FROM streams
WHERE stream_uuid = %(stream_uuid)s;
