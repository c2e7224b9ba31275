-- One batch of the scavenger's sweep, after retention/begin_purge.sql (same transaction): the
-- links and parked entries naming `ids`, archived events that reads no longer return (their
-- stream's retention hides them, as retention/purge.sql deletes those naming the rows it
-- deletes). Nothing happens unless the scavenger's lock of this store (`key`) is free (as in
-- retention/purge.sql; `free` false: another process scavenges).
WITH free AS MATERIALIZED (
    SELECT 1 AS free WHERE pg_try_advisory_xact_lock(hashtextextended(%(key)s, 0))
), parked AS (
    DELETE FROM parked_events AS p
    WHERE p.event_id = ANY(%(ids)s::bigint[]) AND EXISTS (SELECT 1 FROM free)
    RETURNING 1
), linked AS (
    DELETE FROM links AS k
    WHERE k.event_id = ANY(%(ids)s::bigint[]) AND EXISTS (SELECT 1 FROM free)
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM free) AS free,
       (SELECT count(*) FROM parked) + (SELECT count(*) FROM linked) AS deleted;
