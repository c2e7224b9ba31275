SELECT stream_version FROM streams WHERE stream_uuid = %(stream_uuid)s;
