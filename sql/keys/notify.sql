-- Tells every store instance listening to drop its cached data keys
-- ('forget,origin,token'); the subject is not sent: it may be personal data. Listeners of
-- stores with encryption answer with `token` on the forgets channel once they evicted
-- (lifecycle/eviction.py).
SELECT pg_notify(%(channel)s, 'forget,' || %(origin)s || ',' || %(token)s);
