-- Streams created for appends that then failed: a stream exists once it has an event.
DELETE FROM streams WHERE stream_id = ANY(%(stream_ids)s::bigint[]) AND stream_version = 0;
