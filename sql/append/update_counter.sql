UPDATE event_counter SET last_event_id = %(last_event_id)s WHERE id = 1;
