-- One page of streams and the number of matching streams, in one statement (one snapshot).
-- storage/stream_info.py fills in, from fixed texts only, the optional search condition
-- (case-insensitive substring of stream_uuid) and the order (a sort key, then stream_id,
-- with the direction). Every order has an index of its own (schema v2), so the page is an
-- index range scan that stops after offset + limit entries; the total is a count over the
-- matches (an index-only scan without search). Each entry's retention (schema v4) comes with
-- it: its first readable position without the age limit (storage/stream_info.py asks for
-- the exact one of the few entries that have a max_age: retention/first_versions.sql).
WITH page AS (
    SELECT stream_id, stream_uuid, stream_version, created_at, deleted_at, first_version,
           max_count, max_age
    FROM streams{where}
    ORDER BY {order}
    LIMIT %(limit)s OFFSET %(offset)s
)
SELECT t.total, page.stream_uuid, page.stream_version, page.created_at, page.deleted_at,
       greatest(page.first_version,
                page.stream_version - coalesce(page.max_count, page.stream_version) + 1),
       page.max_count, page.max_age
FROM (SELECT count(*) AS total FROM streams{where}) AS t
LEFT JOIN page ON true
ORDER BY {page_order};
