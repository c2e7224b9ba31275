-- Schema version 3 (migration from version 2): fixed name resolution, and soft-deleted
-- streams closed to every writer. Applied like v2.sql: one transaction, under the migration
-- lock, with search_path set to the store's schema and pg_temp last. Nothing is removed or
-- renamed: processes of earlier releases that are still running keep working against it.

-- Every function resolves names in the store's schema, never in pg_temp first: a temporary
-- table named events, streams, links ... on the session that calls it (an application's
-- connection appending with conn=, or a PgBouncer server connection another client left
-- one on) changes nothing. FROM CURRENT is the migration's own search_path: the schema,
-- then pg_temp. Release 1's append_events too: release-1 writers still call it.
ALTER FUNCTION append_events(text[], bigint[], integer[], text[], text[], text[], bytea[],
                             bytea[], text, text)
    SET search_path FROM CURRENT;
ALTER FUNCTION append_events_v2(text[], bigint[], integer[], integer[], boolean[], uuid[],
                                text[], text[], text[], bytea[], bytea[], text, text)
    SET search_path FROM CURRENT;
ALTER FUNCTION delete_stream(text, bigint, boolean, text, text) SET search_path FROM CURRENT;
ALTER FUNCTION link_events(text, bigint, bigint[], text, text) SET search_path FROM CURRENT;
ALTER FUNCTION refuse_event_change() SET search_path FROM CURRENT;
ALTER FUNCTION refuse_stream_delete() SET search_path FROM CURRENT;

-- A soft-deleted stream takes no more events. This release's appends and links check it
-- under the counter row lock; release-1 writers, still running during a rolling upgrade,
-- know nothing of deleted_at and would append anyway: their UPDATE of the stream's version
-- is refused here (release 1 reports it as a wrong expected version; nothing is written).
CREATE OR REPLACE FUNCTION refuse_deleted_stream_append() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    RAISE EXCEPTION 'stream % is deleted: nothing can be appended to it', OLD.stream_uuid
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE OR REPLACE TRIGGER streams_deleted_closed
    BEFORE UPDATE OF stream_version ON streams
    FOR EACH ROW
    WHEN (OLD.deleted_at IS NOT NULL AND NEW.stream_version IS DISTINCT FROM OLD.stream_version)
    EXECUTE FUNCTION refuse_deleted_stream_append();

INSERT INTO schema_version (version) VALUES (3) ON CONFLICT (version) DO NOTHING;
