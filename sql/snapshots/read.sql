SELECT source_uuid, source_version, source_type, data, metadata, created_at
FROM snapshots WHERE source_uuid = %(source_uuid)s;
