INSERT INTO snapshots (source_uuid, source_version, source_type, data, metadata)
VALUES (%(source_uuid)s, %(source_version)s, %(source_type)s, %(data)s, %(metadata)s)
ON CONFLICT (source_uuid) DO UPDATE SET
    source_version = EXCLUDED.source_version, source_type = EXCLUDED.source_type,
    data = EXCLUDED.data, metadata = EXCLUDED.metadata, created_at = now();
