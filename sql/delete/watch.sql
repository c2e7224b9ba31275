-- What a running stream subscription checks on its health ticks, in one round trip: the
-- stream's version (0: missing), whether it is soft-deleted, and whether the subscription's
-- checkpoint row is still there (a hard delete of the stream removes it).
SELECT coalesce((SELECT s.stream_version FROM streams AS s
                 WHERE s.stream_uuid = %(stream_uuid)s), 0),
       coalesce((SELECT s.deleted_at IS NOT NULL FROM streams AS s
                 WHERE s.stream_uuid = %(stream_uuid)s), false),
       EXISTS (SELECT 1 FROM subscriptions AS c
               WHERE c.stream_uuid = %(stream_uuid)s
                 AND c.subscription_name = %(subscription_name)s);
