DELETE FROM snapshots WHERE source_uuid = %(source_uuid)s;
