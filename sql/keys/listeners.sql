-- The sessions of this database that hold the shared advisory lock of a schema's listeners
-- with a key cache (lifecycle/eviction.py, lock_key): their backend pids. A forget waits for
-- each of them to answer that it evicted its cached keys.
SELECT l.pid
FROM pg_locks AS l
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT d.oid FROM pg_database AS d WHERE d.datname = current_database())
  AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(%(key)s, 0);
