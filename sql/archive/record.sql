-- A written and fsynced file joins the manifest: from this commit on, reads take its range
-- from the file (rows of it still in events are skipped).
INSERT INTO archive_files (url, first_event_id, last_event_id, event_count)
VALUES (%(url)s, %(first)s, %(last)s, %(events)s);
