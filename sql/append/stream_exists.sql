UPDATE streams SET stream_version = stream_version + %(n)s
WHERE stream_uuid = %(stream_uuid)s AND stream_version > 0 AND deleted_at IS NULL
RETURNING stream_id, stream_version - %(n)s AS version
