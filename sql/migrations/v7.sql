-- Schema version 7 (migration from version 6). Applied like v2.sql .. v6.sql: one
-- transaction, under the migration lock (with every table of the store locked ACCESS
-- EXCLUSIVE first by storage/schema.py when an existing store is upgraded), with search_path
-- set to the store's schema and pg_temp last. Each topic writes its own block; nothing is
-- removed or renamed.

-- block: store-identity
-- Who this store is, for the archive targets it writes to (lifecycle/archive/files.py): a
-- target directory belongs to one store, named by store_id in a marker file there, so that
-- two schemas (or databases) given the same target refuse to share it instead of replacing
-- and removing each other's files. One row, made here (by init and by the migration alike);
-- reset keeps it.
--
-- legacy_event_id, legacy_stream_id: the event counter and the highest stream_id when the
-- store reached version 7 (0 and 0 for a store created at version 7 or later; reset sets
-- them to 0). See the block stream-lives.
CREATE TABLE IF NOT EXISTS store_identity (
    id                integer     PRIMARY KEY CHECK (id = 1),
    store_id          uuid        NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    legacy_event_id   bigint      NOT NULL,
    legacy_stream_id  bigint      NOT NULL
);
INSERT INTO store_identity (id, store_id, legacy_event_id, legacy_stream_id)
SELECT 1, gen_random_uuid(),
       (SELECT c.last_event_id FROM event_counter AS c WHERE c.id = 1),
       coalesce((SELECT max(s.stream_id) FROM streams AS s), 0)
ON CONFLICT (id) DO NOTHING;
-- end of block: store-identity

-- block: stream-lives
-- Which life of a stream an archived event belongs to. A stream hard-deleted and created
-- again leaves its earlier life's events in the archive files at the same versions; until now
-- an archived event counted as the current life's when the stream row was created no later
-- than the event (created_at, now() of each transaction: the start of a transaction, not
-- its commit). An append in a caller's transaction that began before the hard delete (or
-- before the earlier life's events) made the earlier life's archived events live again, and
-- an event appended in a transaction older than its stream's row was hidden once archived.
--
-- Now every hard delete records a tombstone: upto, the event counter read under the counter
-- row lock that every append, link and delete takes first and holds to its commit. Every
-- event of the lives ended by then has an event_id <= upto; every event of a later life a
-- greater one. An archived event is of its stream's current life when its event_id is above
-- the stream's tombstone (none: 0). A stream deleted again keeps the greatest upto.
--
-- A store migrated from version 6 has no tombstones of the hard deletes before the
-- migration. For the events appended before it (event_id <= legacy_event_id) the rule of
-- version 6 still applies besides the tombstone: the stream must have existed at the
-- migration (stream_id <= legacy_stream_id: a stream created since cannot own them) and been
-- created no later than the event. Events appended since follow the tombstones only.
CREATE TABLE IF NOT EXISTS hard_deletes (
    stream_uuid  text    PRIMARY KEY,
    upto         bigint  NOT NULL
);

-- Whether an archived event (its stream_uuid, event_id and created_at, from its file) is of
-- the current life of an existing stream: what link_events_v5 checks under the counter row
-- lock. The same rule as archive/streams.sql with lifecycle/archive/reader.py `_kept`
-- (which adds the stream's retention).
CREATE OR REPLACE FUNCTION archived_event_live(
    p_stream_uuid text, p_event_id bigint, p_created_at timestamptz
) RETURNS boolean LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT EXISTS (
        SELECT 1 FROM streams AS s
        LEFT JOIN hard_deletes AS h ON h.stream_uuid = s.stream_uuid
        LEFT JOIN store_identity AS i ON i.id = 1
        WHERE s.stream_uuid = p_stream_uuid
          AND p_event_id > coalesce(h.upto, 0)
          AND (p_event_id > coalesce(i.legacy_event_id, 0)
               OR (s.stream_id <= i.legacy_stream_id AND s.created_at <= p_created_at)))
$$;

-- delete_stream() of v2.sql with the tombstone written by a hard delete. Replaced in place:
-- release-6 processes still running call it too, so no hard delete goes unrecorded.
CREATE OR REPLACE FUNCTION delete_stream(
    p_stream_uuid text,
    p_expected    bigint,
    p_hard        boolean,
    p_channel     text,
    p_origin      text
) RETURNS TABLE (status smallint, actual_version bigint)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_id       bigint;
    v_version  bigint;
    v_deleted  boolean;
BEGIN
    PERFORM 1 FROM event_counter AS c WHERE c.id = 1 FOR UPDATE;
    SELECT s.stream_id, s.stream_version, s.deleted_at IS NOT NULL
    INTO v_id, v_version, v_deleted
    FROM streams AS s WHERE s.stream_uuid = p_stream_uuid FOR UPDATE;
    IF NOT FOUND OR v_version = 0 THEN
        status := 4;
        actual_version := NULL;
        RETURN NEXT;
        RETURN;
    END IF;
    actual_version := v_version;
    IF v_deleted AND NOT p_hard THEN
        status := 5;
    ELSIF p_expected >= 0 AND p_expected <> v_version THEN
        status := 2;
    ELSE
        status := 0;
    END IF;
    IF status <> 0 THEN
        RETURN NEXT;
        RETURN;
    END IF;
    IF p_hard THEN
        PERFORM set_config('eventstore_actors.hard_delete', 'on', true);
        -- The tombstone: every event of the life that ends here has an event_id up to the
        -- counter (appends to the stream take the counter row lock, held now), every event
        -- of a later life a greater one.
        INSERT INTO hard_deletes AS h (stream_uuid, upto)
        SELECT p_stream_uuid, c.last_event_id FROM event_counter AS c WHERE c.id = 1
        ON CONFLICT (stream_uuid) DO UPDATE SET upto = greatest(h.upto, EXCLUDED.upto);
        DELETE FROM links AS k WHERE k.stream_id = v_id;
        DELETE FROM links AS k USING events AS e
        WHERE k.event_id = e.event_id AND e.stream_id = v_id;
        -- Parked copies of its events (in any subscription) and its own subscriptions' rows.
        DELETE FROM parked_events AS pe USING events AS e
        WHERE pe.event_id = e.event_id AND e.stream_id = v_id;
        DELETE FROM parked_events AS pe WHERE pe.stream_uuid = p_stream_uuid;
        DELETE FROM events AS e WHERE e.stream_id = v_id;
        DELETE FROM subscriptions AS s WHERE s.stream_uuid = p_stream_uuid;
        DELETE FROM streams AS s WHERE s.stream_id = v_id;
        -- Nothing later in this transaction may delete events.
        PERFORM set_config('eventstore_actors.hard_delete', 'off', true);
    ELSE
        UPDATE streams AS s SET deleted_at = now() WHERE s.stream_id = v_id;
    END IF;
    PERFORM pg_notify(p_channel, 'delete,' || p_origin || ',' || p_stream_uuid);
    RETURN NEXT;
END
$$;

-- link_events_v5() of v5.sql with an archived event's stream checked by the rule above
-- instead of the stream's created_at. Replaced in place (release-6 processes call it too;
-- its arguments are unchanged).
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
            -- gone (or was hard-deleted and created again since) by now.
            SELECT m.id INTO bad_event_id
            FROM unnest(v_missing) WITH ORDINALITY AS m(id, ord)
            LEFT JOIN unnest(p_archived, p_archived_streams, p_archived_created)
                AS c(id, stream_uuid, created_at) ON c.id = m.id
            WHERE coalesce((SELECT a.last_event_id FROM archive_files AS a
                            WHERE a.first_event_id <= m.id
                            ORDER BY a.first_event_id DESC LIMIT 1) < m.id, true)
               OR (c.id IS NOT NULL
                   AND NOT archived_event_live(c.stream_uuid, c.id, c.created_at))
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
-- end of block: stream-lives

INSERT INTO schema_version (version) VALUES (7) ON CONFLICT (version) DO NOTHING;
