-- Which of these advisory lock keys (texts hashed as the subscriptions hash them) some
-- session of this database holds now: the 1-based positions of the held ones.
SELECT k.i
FROM unnest(%(keys)s::text[]) WITH ORDINALITY AS k(key, i)
WHERE EXISTS (
    SELECT 1 FROM pg_locks AS l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND l.database = (SELECT d.oid FROM pg_database AS d WHERE d.datname = current_database())
      AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(k.key, 0)
);
