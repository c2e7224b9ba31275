SELECT count(*) FROM forgotten_subjects;
