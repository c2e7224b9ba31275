-- set_stream_retention: the new limits, and first_version moved to the first position the old
-- ones left readable (retention/first_version.sql, evaluated on the row as it was), so that what they hid
-- stays hidden (a limit set to None brings nothing back). One statement: the row lock is held
-- for an instant. No row: no such stream (or one with no events). Without archives only:
-- with them, retention/lock_stream.sql then retention/set_limits_at.sql.
UPDATE streams AS s
SET first_version = {first_version}, max_count = %(max_count)s, max_age = %(max_age)s
WHERE s.stream_uuid = %(stream_uuid)s AND s.stream_version > 0
RETURNING s.stream_id;
