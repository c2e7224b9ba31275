-- One page of streams and the number of matching streams, in one statement (one snapshot).
-- storage/stream_info.py fills in, from fixed texts only, the optional search condition
-- (case-insensitive substring of stream_uuid) and the order (a sort key, then stream_id,
-- with the direction). Every order has an index of its own (schema v2), so the page is an
-- index range scan that stops after offset + limit entries; the total is a count over the
-- matches (an index-only scan without search). Each entry's retention (schema v4) comes with
-- it: the first readable position is retention/first_version.sql.
WITH page AS (
    SELECT stream_id, stream_uuid, stream_version, created_at, deleted_at, max_count,
           max_age
    FROM streams{where}
    ORDER BY {order}
    LIMIT %(limit)s OFFSET %(offset)s
)
SELECT t.total, page.stream_uuid, page.stream_version, page.created_at, page.deleted_at,
       (SELECT {first_version} FROM streams AS s WHERE s.stream_id = page.stream_id),
       page.max_count, page.max_age
FROM (SELECT count(*) AS total FROM streams{where}) AS t
LEFT JOIN page ON true
ORDER BY {page_order};
