SELECT request, first_event_id, actual_version, created_at
FROM append_events(%(stream_uuids)s, %(expected)s, %(counts)s, %(event_types)s,
                   %(correlation_ids)s, %(causation_ids)s, %(data)s, %(metadata)s,
                   %(channel)s, %(origin)s);
