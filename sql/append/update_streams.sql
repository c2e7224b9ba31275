UPDATE streams AS s SET stream_version = v.stream_version
FROM unnest(%(stream_ids)s::bigint[], %(stream_versions)s::bigint[]) AS v(stream_id, stream_version)
WHERE s.stream_id = v.stream_id;
