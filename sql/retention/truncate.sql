-- truncate_stream, last step: everything below `before` hidden for good.
UPDATE streams SET first_version = greatest(first_version, %(before)s)
WHERE stream_id = %(stream_id)s;
