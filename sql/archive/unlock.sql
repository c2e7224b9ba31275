SELECT pg_advisory_unlock(hashtextextended('eventstore_actors.archive.' || current_schema(), 0));
