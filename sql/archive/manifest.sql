-- Every archived range, oldest first: what reads take from the Parquet files.
SELECT url, first_event_id, last_event_id, event_count, state, created_at, deleted_at
FROM archive_files
ORDER BY first_event_id;
