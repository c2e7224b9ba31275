-- Schema version 2 (migration from version 1): event UUIDs, stream deletion, links, and the
-- indexes behind stream pagination. Applied by admin.migrate (and by admin.init after
-- schema/v1.sql) in one transaction, under the migration lock, with search_path set to the
-- store's schema. Every v1 row is kept. Processes of the previous release that are still
-- running keep working against it until they are upgraded: nothing they use is removed.

-- Event UUIDs, unique in the store: idempotent appends find earlier attempts by them.
-- Existing events get fresh random UUIDs. ADD COLUMN with a volatile default rewrites the
-- table without an UPDATE, so the immutability trigger does not fire; the default stays for
-- writers that do not pass one.
ALTER TABLE events ADD COLUMN IF NOT EXISTS event_uuid uuid NOT NULL DEFAULT gen_random_uuid();
CREATE UNIQUE INDEX IF NOT EXISTS events_event_uuid_key ON events (event_uuid);

-- Soft deletes mark the stream; its events stay in $all.
ALTER TABLE streams ADD COLUMN IF NOT EXISTS deleted_at timestamptz;

-- Stream pagination sorts by any of these; each index ends in stream_id so that pages are
-- stable and a page of 50 out of millions is an index range scan, not a sort.
CREATE INDEX IF NOT EXISTS streams_stream_version_idx ON streams (stream_version, stream_id);
CREATE INDEX IF NOT EXISTS streams_created_at_idx ON streams (created_at, stream_id);
CREATE INDEX IF NOT EXISTS streams_deleted_at_idx ON streams (deleted_at, stream_id);
CREATE INDEX IF NOT EXISTS streams_status_idx ON streams ((deleted_at IS NOT NULL), stream_id);

-- Links: existing events added to another stream without copying them. A stream's positions
-- (its stream_version) are shared by its own events and its links: event_number is the
-- link's position in the linking stream.
CREATE TABLE IF NOT EXISTS links (
    stream_id     bigint      NOT NULL,
    event_number  bigint      NOT NULL,
    event_id      bigint      NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, event_number),
    CONSTRAINT links_stream_event_key UNIQUE (stream_id, event_id)
);
CREATE INDEX IF NOT EXISTS links_event_id_idx ON links (event_id);

-- Events stay immutable. The one exception is a hard delete, which the store performs in a
-- transaction that has set eventstore_actors.hard_delete = 'on' (SET LOCAL) itself.
CREATE OR REPLACE FUNCTION refuse_event_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'events'
       AND current_setting('eventstore_actors.hard_delete', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'events are immutable: % is not allowed on %', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END
$$;

INSERT INTO schema_version (version) VALUES (2) ON CONFLICT (version) DO NOTHING;
