SELECT part, status, first_event_id, last_event_id, first_version, actual_version, created_at
FROM append_events_v4(%(stream_uuids)s, %(expected)s, %(counts)s, %(units)s, %(check)s,
                      %(event_uuids)s::uuid[], %(event_types)s, %(correlation_ids)s,
                      %(causation_ids)s, %(data)s, %(metadata)s, %(subjects)s::text[],
                      %(channel)s, %(origin)s);
