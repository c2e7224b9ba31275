-- The first statement of a covered stream read (storage/reader.py read_stream_covered), in
-- the same REPEATABLE READ snapshot as the events read after it: a stream's version moves in
-- the transaction that writes its events or links, so in one snapshot every position up to
-- it is either visible or gone (a hard-deleted linked event). NULL: no such stream.
SELECT stream_version, deleted_at IS NOT NULL FROM streams WHERE stream_uuid = %(stream_uuid)s;
