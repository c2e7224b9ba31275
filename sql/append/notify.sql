-- One notification per commit: "first_event_id,last_event_id,origin" (origin: the
-- committing store instance, whose own publisher already has the rows). Delivered only on COMMIT.
SELECT pg_notify(%(channel)s, %(payload)s);
