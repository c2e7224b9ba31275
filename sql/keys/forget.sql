-- Forgets a subject: its data key goes, the subject is marked forgotten. Run after
-- append/lock_counter in the same transaction (the counter row lock, taken first like every
-- append, so an append that waited for it finds the subject forgotten, and this statement's
-- snapshot sees every append committed before). Returns whether the subject is newly
-- forgotten and how many of its events are stored.
WITH k AS (
    DELETE FROM data_keys WHERE subject = %(subject)s
),
f AS (
    INSERT INTO forgotten_subjects (subject) VALUES (%(subject)s)
    ON CONFLICT (subject) DO NOTHING
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM f),
       (SELECT count(*) FROM events AS e WHERE e.subject = %(subject)s);
