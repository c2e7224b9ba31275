-- A subject's wrapped data key (no row: none yet, or forgotten) and whether it is forgotten.
SELECT (SELECT k.wrapped_key FROM data_keys AS k WHERE k.subject = %(subject)s),
       EXISTS (SELECT 1 FROM forgotten_subjects AS f WHERE f.subject = %(subject)s);
