-- How many positions below %(below)s are links: the others are the stream's own events.
SELECT count(*) FROM links AS k WHERE k.stream_id = %(stream_id)s AND k.event_number < %(below)s;
