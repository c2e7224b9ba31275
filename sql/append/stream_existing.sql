UPDATE streams SET stream_version = stream_version + %(n)s
WHERE stream_uuid = %(stream_uuid)s AND stream_version = %(expected)s
RETURNING stream_id
