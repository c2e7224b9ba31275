INSERT INTO snapshots (source_uuid, source_version, source_type, data, metadata, subject)
VALUES (%(source_uuid)s, %(source_version)s, %(source_type)s, %(data)s, %(metadata)s,
        %(subject)s)
ON CONFLICT (source_uuid) DO UPDATE SET
    source_version = EXCLUDED.source_version, source_type = EXCLUDED.source_type,
    data = EXCLUDED.data, metadata = EXCLUDED.metadata, subject = EXCLUDED.subject,
    created_at = now();
