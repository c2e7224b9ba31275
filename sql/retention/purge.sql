-- One scavenger batch, in one statement after retention/begin_purge.sql (same transaction):
-- the stream's hidden rows at the `batch` positions from its lowest one stored at or above
-- `low` (everything below `low` is gone already, so the probes never walk the dead index
-- entries earlier batches left until vacuum), up to `bound`, its first readable position. A
-- stream's positions are shared by its own events and its links, so the range holds at most
-- `batch` rows of both together; each is deleted by one range scan of its primary key or
-- unique index, with what a hard delete removes with the events: the links of other streams
-- to them (index links_event_id_idx) and the parked entries naming them. (A stream never
-- links its own events: the two deletes of links never meet.) Row locks only: appends carry
-- on. Nothing happens unless the scavenger's lock of this store (`key`) is free: a
-- transaction-level advisory lock, taken without waiting (`free` false: another process is
-- scavenging, this one leaves the work to it). `start` NULL: nothing stored from `low` on.
WITH batch AS MATERIALIZED (
    SELECT f.start, least(%(bound)s::bigint, f.start + %(batch)s::bigint) AS stop
    FROM (SELECT least(
              (SELECT e.stream_version FROM events AS e
               WHERE e.stream_id = %(stream_id)s AND e.stream_version >= %(low)s
               ORDER BY e.stream_version LIMIT 1),
              (SELECT k.event_number FROM links AS k
               WHERE k.stream_id = %(stream_id)s AND k.event_number >= %(low)s
               ORDER BY k.event_number LIMIT 1)) AS start) AS f
    WHERE pg_try_advisory_xact_lock(hashtextextended(%(key)s, 0))
), gone AS (
    DELETE FROM events AS e
    WHERE e.stream_id = %(stream_id)s
      AND e.stream_version >= (SELECT b.start FROM batch AS b)
      AND e.stream_version < (SELECT b.stop FROM batch AS b)
    RETURNING e.event_id
), parked AS (
    DELETE FROM parked_events AS p
    WHERE p.event_id = ANY(ARRAY(SELECT g.event_id FROM gone AS g))
), linked AS (
    DELETE FROM links AS k
    WHERE k.event_id = ANY(ARRAY(SELECT g.event_id FROM gone AS g))
), own AS (
    DELETE FROM links AS k
    WHERE k.stream_id = %(stream_id)s
      AND k.event_number >= (SELECT b.start FROM batch AS b)
      AND k.event_number < (SELECT b.stop FROM batch AS b)
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM batch) AS free,
       (SELECT b.start FROM batch AS b) AS start,
       (SELECT count(*) FROM gone) + (SELECT count(*) FROM own) AS deleted;
