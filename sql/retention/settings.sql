-- The streams with retention, for `eventstore-actors status`: at most `limit` of them, and
-- how many there are in all.
SELECT t.total, r.stream_uuid, r.first, r.max_count, r.max_age
FROM (SELECT count(*) AS total FROM streams AS s
      WHERE s.first_version > 1 OR s.max_count IS NOT NULL OR s.max_age IS NOT NULL) AS t
LEFT JOIN LATERAL (
    SELECT s.stream_uuid, {first_version} AS first, s.max_count, s.max_age
    FROM streams AS s
    WHERE s.first_version > 1 OR s.max_count IS NOT NULL OR s.max_age IS NOT NULL
    ORDER BY s.stream_id
    LIMIT %(limit)s) AS r ON true
ORDER BY r.stream_uuid;
