-- Why an append failed: the stream's version and whether it is soft-deleted (no row: missing).
SELECT stream_version, deleted_at IS NOT NULL FROM streams WHERE stream_uuid = %(stream_uuid)s;
