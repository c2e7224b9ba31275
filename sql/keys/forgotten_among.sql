-- Which of these subjects are forgotten (archived events carry no flag of their own).
SELECT subject FROM forgotten_subjects WHERE subject = ANY(%(subjects)s::text[]);
