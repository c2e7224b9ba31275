-- Which of these subscription lock keys (texts hashed as the subscriptions hash them) a
-- session of this database holds without the mark that subscriptions of this release take
-- beside their locks (see subscriptions/lock.sql): the 1-based positions of those. Such a
-- session belongs to a process of an earlier release, whose subscriptions cannot read past the
-- gap a hard delete leaves in $all.
SELECT k.i
FROM unnest(%(keys)s::text[]) WITH ORDINALITY AS k(key, i)
WHERE EXISTS (
    SELECT 1 FROM pg_locks AS l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.mode = 'ExclusiveLock'
      AND l.database = (SELECT d.oid FROM pg_database AS d WHERE d.datname = current_database())
      AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(k.key, 0)
      AND NOT EXISTS (
          SELECT 1 FROM pg_locks AS m
          WHERE m.pid = l.pid AND m.locktype = 'advisory' AND m.granted AND m.objsubid = 1
            AND m.mode = 'ShareLock'
            AND ((m.classid::bigint << 32) | m.objid::bigint)
                = hashtextextended('eventstore_actors: reads past gaps', 0)
      )
);
