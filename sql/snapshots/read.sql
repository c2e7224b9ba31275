-- A source's snapshot; the last two columns: its data subject (data then encrypted) and
-- whether that subject is forgotten (same snapshot as the row).
SELECT s.source_uuid, s.source_version, s.source_type, s.data, s.metadata, s.created_at,
       s.subject,
       CASE WHEN s.subject IS NULL THEN false
            ELSE EXISTS (SELECT 1 FROM forgotten_subjects AS f WHERE f.subject = s.subject) END
FROM snapshots AS s WHERE s.source_uuid = %(source_uuid)s;
