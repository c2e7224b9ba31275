SELECT EXISTS (SELECT 1 FROM forgotten_subjects AS f WHERE f.subject = %(subject)s);
