-- Tells every store instance listening to drop its cached data keys ('forget,origin,'); the
-- subject is not sent: it may be personal data.
SELECT pg_notify(%(channel)s, 'forget,' || %(origin)s || ',');
