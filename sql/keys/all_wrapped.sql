-- Every wrapped data key, locked for re-wrapping (master key rotation).
SELECT subject, wrapped_key FROM data_keys ORDER BY subject FOR UPDATE;
