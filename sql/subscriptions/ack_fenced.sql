-- A subscription acked in its callers' transactions stores a position that no ack of theirs
-- covers (filtered-out, deleted or nacked events): only once every ack of theirs that it saw
-- is committed (the stored checkpoint reached %(fence)s), and without waiting on a row that
-- an open transaction of theirs holds (SKIP LOCKED). Returns the checkpoint found (NULL: the
-- row is held, or gone); it moved iff that is >= fence and < last_seen.
WITH found AS (
    SELECT last_seen FROM subscriptions
    WHERE stream_uuid = %(stream_uuid)s AND subscription_name = %(subscription_name)s
    FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE subscriptions AS s SET last_seen = %(last_seen)s, last_ack_at = now()
    FROM found
    WHERE s.stream_uuid = %(stream_uuid)s AND s.subscription_name = %(subscription_name)s
      AND found.last_seen >= %(fence)s AND found.last_seen < %(last_seen)s
    RETURNING s.last_seen
)
SELECT (SELECT last_seen FROM found), (SELECT count(*) FROM moved);
