-- Schema version 5 (migration from version 4). Applied like v2.sql .. v4.sql: one
-- transaction, under the migration lock (with every table of the store locked ACCESS
-- EXCLUSIVE first by storage/schema.py when an existing store is upgraded), with search_path
-- set to the store's schema and pg_temp last. Each topic writes its own block; nothing is
-- removed or renamed.

-- block: archive-links
-- Links to archived events (issue 20). link_events() (v2.sql) accepts only events still in
-- the events table, so an event moved to a Parquet file (lifecycle/archive) could no longer
-- be linked, although every read still returns it. link_events_v5 is link_events with
-- archived events accepted; release-4 processes keep calling link_events, unchanged (they
-- refuse archived events, as before).
--
-- An event_id that is neither in events nor inside an archived range of the manifest is
-- unknown: status 8, as before. One inside an archived range may be in its file, or may be a
-- gap there (an event hard-deleted or scavenged before the archive, or of a stream
-- hard-deleted since): only the file can tell, and the database cannot read it. So the first
-- call names those event_ids (status 9, archived_ids, in link order; nothing written, no
-- stream created); the caller (storage/links.py) looks them up in the files, outside any
-- lock, and calls again with the ones it found live in p_archived, each with its
-- stream_uuid and created_at (p_archived_streams, p_archived_created). That call checks again,
-- under the counter row lock as every link does, that each one's stream still exists and is
-- not younger than the event (what a read of the archive checks, lifecycle/archive/reader.py):
-- a hard delete of that stream between the two calls makes it status 8 too, as it would for
-- an event still in the events table. Status 9 comes after the other checks (2 to 6): an
-- error that needs no file is reported without reading one. The archive's manifest is a
-- handful of rows, looked up through archive_files_range_key; events by primary key.
CREATE OR REPLACE FUNCTION link_events_v5(
    p_stream_uuid         text,
    p_expected            bigint,
    p_event_ids           bigint[],
    p_archived            bigint[],
    p_archived_streams    text[],
    p_archived_created    timestamptz[],
    p_channel             text,
    p_origin              text
) RETURNS TABLE (status smallint, first_version bigint, actual_version bigint,
                 bad_event_id bigint, archived_ids bigint[])
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_id       bigint;
    v_version  bigint;
    v_deleted  boolean;
    v_n        integer := coalesce(cardinality(p_event_ids), 0);
    v_missing  bigint[];   -- the event_ids not in events, in link order
BEGIN
    PERFORM 1 FROM event_counter AS c WHERE c.id = 1 FOR UPDATE;
    SELECT s.stream_id, s.stream_version, s.deleted_at IS NOT NULL
    INTO v_id, v_version, v_deleted
    FROM streams AS s WHERE s.stream_uuid = p_stream_uuid FOR UPDATE;
    IF NOT FOUND THEN
        v_id := NULL;
        v_version := 0;
        v_deleted := false;
    END IF;
    status := CASE
        WHEN v_deleted THEN 5
        WHEN p_expected = -1 THEN 0
        WHEN p_expected = -2 THEN CASE WHEN v_version = 0 THEN 0 ELSE 3 END
        WHEN p_expected = -3 THEN CASE WHEN v_version > 0 THEN 0 ELSE 4 END
        WHEN v_version = p_expected THEN 0
        ELSE 2 END;
    actual_version := nullif(v_version, 0);
    first_version := NULL;
    bad_event_id := NULL;
    archived_ids := NULL;
    IF status = 0 THEN
        v_missing := ARRAY(
            SELECT u.id FROM unnest(p_event_ids) WITH ORDINALITY AS u(id, ord)
            WHERE NOT EXISTS (SELECT 1 FROM events AS e WHERE e.event_id = u.id)
            ORDER BY u.ord);
        IF cardinality(v_missing) > 0 THEN
            -- Unknown: outside every archived range, or found in a file but its stream is
            -- gone (or was created again after it) by now.
            SELECT m.id INTO bad_event_id
            FROM unnest(v_missing) WITH ORDINALITY AS m(id, ord)
            LEFT JOIN unnest(p_archived, p_archived_streams, p_archived_created)
                AS c(id, stream_uuid, created_at) ON c.id = m.id
            WHERE coalesce((SELECT a.last_event_id FROM archive_files AS a
                            WHERE a.first_event_id <= m.id
                            ORDER BY a.first_event_id DESC LIMIT 1) < m.id, true)
               OR (c.id IS NOT NULL AND NOT EXISTS (
                       SELECT 1 FROM streams AS w
                       WHERE w.stream_uuid = c.stream_uuid AND w.created_at <= c.created_at))
            ORDER BY m.ord LIMIT 1;
            IF bad_event_id IS NOT NULL THEN
                status := 8;
            END IF;
        END IF;
    END IF;
    IF status = 0 AND v_id IS NOT NULL THEN
        SELECT u.id INTO bad_event_id
        FROM unnest(p_event_ids) WITH ORDINALITY AS u(id, ord)
        WHERE EXISTS (SELECT 1 FROM links AS k WHERE k.stream_id = v_id AND k.event_id = u.id)
           OR EXISTS (SELECT 1 FROM events AS e WHERE e.event_id = u.id AND e.stream_id = v_id)
        ORDER BY u.ord LIMIT 1;
        IF bad_event_id IS NOT NULL THEN
            status := 6;
        END IF;
    END IF;
    IF status = 0 AND cardinality(v_missing) > 0 THEN
        -- Archived, not yet looked up in the files by the caller.
        archived_ids := ARRAY(
            SELECT m.id FROM unnest(v_missing) WITH ORDINALITY AS m(id, ord)
            WHERE NOT m.id = ANY(coalesce(p_archived, '{}'))
            ORDER BY m.ord);
        IF cardinality(archived_ids) > 0 THEN
            status := 9;
        ELSE
            archived_ids := NULL;
        END IF;
    END IF;
    IF status <> 0 THEN
        RETURN NEXT;
        RETURN;
    END IF;
    IF v_id IS NULL THEN
        INSERT INTO streams (stream_uuid) VALUES (p_stream_uuid) RETURNING stream_id INTO v_id;
    END IF;
    INSERT INTO links (stream_id, event_number, event_id)
    SELECT v_id, v_version + u.ord, u.id FROM unnest(p_event_ids) WITH ORDINALITY AS u(id, ord);
    UPDATE streams AS s SET stream_version = v_version + v_n WHERE s.stream_id = v_id;
    PERFORM pg_notify(p_channel, 'link,' || p_origin || ',' || p_stream_uuid);
    first_version := v_version + 1;
    actual_version := v_version + v_n;
    RETURN NEXT;
END
$$;
-- end of block: archive-links

-- block: parked-index
-- parked_events is keyed by (stream_uuid, subscription_name, event_id): a statement that
-- looks entries up by event_id alone (each scavenger batch, sql/retention/purge.sql; a hard
-- delete, delete_stream() in v2.sql) scanned the whole table. Not CONCURRENTLY: the
-- migration is one transaction (CREATE INDEX CONCURRENTLY cannot run in one), and an
-- upgrade already holds ACCESS EXCLUSIVE on every table of the store from its start
-- (storage/schema.py, _lock_tables) until it commits; CREATE INDEX itself takes SHARE on
-- parked_events (reads go on, writes wait). The table holds only the events subscriptions
-- gave up on, so the build is short; a store with a very large parked_events can build the
-- index CONCURRENTLY under this name before migrating (docs/upgrading.md), and this statement
-- then does nothing (drop it first if that build failed: an invalid index would be kept).
CREATE INDEX IF NOT EXISTS parked_events_event_id_idx ON parked_events (event_id);
-- end of block: parked-index

-- block: crypto
-- The forget generation: a random value from 0 to 2^62 - 1, drawn anew in the very
-- transaction that marks a subject forgotten (a trigger on forgotten_subjects, so a forget
-- by a release-4 process, or by hand, draws one too): one generation, one set of forgotten
-- subjects. A read statement returns it once (an InitPlan, O(1) per statement) instead of
-- probing forgotten_subjects for every row; a key cache filled at generation g serves rows
-- read at g, and fetches again for rows of any other (lifecycle/encryption.py, Keyring). A
-- random value rather than a counter: a database restored from a backup, or promoted after
-- a lossy fail-over, cannot repeat a generation with other subjects forgotten. Release-4
-- readers keep their per-row probe and are unaffected. One row, updated only by forgets
-- (rare): appends never touch it.
CREATE TABLE IF NOT EXISTS forget_generation (
    id          integer PRIMARY KEY CHECK (id = 1),
    generation  bigint  NOT NULL
);
INSERT INTO forget_generation (id, generation)
VALUES (1, floor(random() * 4611686018427387904)::bigint)
ON CONFLICT (id) DO NOTHING;

CREATE OR REPLACE FUNCTION bump_forget_generation() RETURNS trigger
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE forget_generation SET generation = floor(random() * 4611686018427387904)::bigint
    WHERE id = 1;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER forgotten_subjects_bump_generation
    AFTER INSERT ON forgotten_subjects
    FOR EACH ROW EXECUTE FUNCTION bump_forget_generation();
-- end block: crypto

INSERT INTO schema_version (version) VALUES (5) ON CONFLICT (version) DO NOTHING;
