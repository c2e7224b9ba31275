-- Forgets a subject: its data key goes, the subject is marked forgotten. Run after
-- append/lock_counter in the same transaction (the counter row lock, taken first like every
-- append, so an append that waited for it finds the subject forgotten, and this statement's
-- snapshot sees every append committed before). Returns whether the subject is newly
-- forgotten, how many of its events above the archived ranges are readable (as
-- read/all_events.sql decides: not hidden by their stream's retention), and the last archived
-- event_id, from this one snapshot: the events up to it are counted from the archive files
-- by the caller, so a range whose rows are still being deleted is counted once.
WITH k AS (
    DELETE FROM data_keys WHERE subject = %(subject)s
),
f AS (
    INSERT INTO forgotten_subjects (subject) VALUES (%(subject)s)
    ON CONFLICT (subject) DO NOTHING
    RETURNING 1
),
a AS (
    SELECT coalesce(max(last_event_id), 0) AS upto FROM archive_files
)
SELECT EXISTS (SELECT 1 FROM f),
       (SELECT count(*)
        FROM events AS e JOIN streams AS s ON s.stream_id = e.stream_id
        WHERE e.subject = %(subject)s
          AND e.event_id > (SELECT a.upto FROM a)
          AND e.stream_version >= greatest(s.first_version,
                                           s.stream_version - coalesce(s.max_count, s.stream_version) + 1)
          AND (s.max_age IS NULL OR e.created_at >= now() - s.max_age)),
       (SELECT a.upto FROM a);
