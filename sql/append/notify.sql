-- One notification per commit: "first_event_id,last_event_id". Delivered only on COMMIT.
SELECT pg_notify(%(channel)s, %(payload)s);
