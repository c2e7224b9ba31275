SELECT last_event_id FROM event_counter WHERE id = 1;
