-- set_stream_retention in a store with archive files, after retention/lock_stream.sql (same
-- transaction, the row locked): the new limits, and first_version moved to `first`, the first
-- position the old limits left readable counting the stream's archived events (which
-- retention/first_version.sql does not see), so that what they hid stays hidden.
UPDATE streams
SET first_version = greatest(first_version, %(first)s), max_count = %(max_count)s,
    max_age = %(max_age)s
WHERE stream_id = %(stream_id)s;
