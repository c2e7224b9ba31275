-- A subject's wrapped data key (NULL: none yet, or forgotten), whether it is forgotten, and
-- the forget generation (schema v5), all from this statement's snapshot: a key cached with
-- that generation is good for reads up to it (lifecycle/encryption.py, Keyring).
SELECT (SELECT k.wrapped_key FROM data_keys AS k WHERE k.subject = %(subject)s),
       EXISTS (SELECT 1 FROM forgotten_subjects AS f WHERE f.subject = %(subject)s),
       (SELECT g.generation FROM forget_generation AS g WHERE g.id = 1);
