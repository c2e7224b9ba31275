-- Refuses (SQLSTATE EAF01) the events of a COPY append when one names a forgotten data
-- subject; run under the counter row lock (sql/migrations/v4.sql).
SELECT refuse_forgotten_subjects(%(subjects)s::text[]);
