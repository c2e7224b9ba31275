UPDATE archive_files SET state = 'deleted', deleted_at = now()
WHERE first_event_id = %(first)s AND state = 'recorded';
