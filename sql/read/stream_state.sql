-- What a read needs to say why a stream gave no rows: missing, soft-deleted, or just nothing
-- in that range. Also the row behind stream_info, with its retention (schema v4): the first
-- readable position (retention/first_version.sql), max_count and max_age.
SELECT s.stream_uuid, s.stream_version, s.created_at, s.deleted_at, {first_version},
       s.max_count, s.max_age
FROM streams AS s
WHERE s.stream_uuid = %(stream_uuid)s;
