-- Stores a subject's new wrapped data key unless one is there (a concurrent first use):
-- the caller reads back the one that won.
INSERT INTO data_keys (subject, wrapped_key) VALUES (%(subject)s, %(wrapped_key)s)
ON CONFLICT (subject) DO NOTHING;
