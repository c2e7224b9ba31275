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

-- Events and links stay immutable. The one exception is a hard delete, which the store
-- performs in a transaction that has set eventstore_actors.hard_delete = 'on' (SET LOCAL)
-- itself (delete_stream() below).
CREATE OR REPLACE FUNCTION refuse_event_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME IN ('events', 'links')
       AND current_setting('eventstore_actors.hard_delete', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'events are immutable: % is not allowed on %', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE OR REPLACE TRIGGER links_immutable
    BEFORE UPDATE OR DELETE ON links
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_event_change();

-- A stream that holds events is removed only by a hard delete. Appends may drop a stream row
-- they created for nothing (version 0, see append/drop_unused_streams.sql); UPDATEs (versions,
-- soft deletes) go through.
CREATE OR REPLACE FUNCTION refuse_stream_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.stream_version = 0
       OR current_setting('eventstore_actors.hard_delete', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'streams are kept: DELETE of stream % is allowed only in a hard delete',
        OLD.stream_uuid USING ERRCODE = 'restrict_violation';
END
$$;

CREATE OR REPLACE TRIGGER streams_kept
    BEFORE DELETE ON streams
    FOR EACH ROW EXECUTE FUNCTION refuse_stream_delete();

-- Appends for schema version 2 (version 1's append_events stays for v1 processes still
-- running). A group of units, one per caller: a unit is one or more parts (one stream each,
-- adjacent in the arrays, never the same stream twice) written all or nothing, each part
-- checked against its own expected version: an int >= 0, or -1 ANY_VERSION, -2 NO_STREAM,
-- -3 STREAM_EXISTS. Returns one row per part; status: 0 written, 1 replayed (every event of
-- the unit was already stored, by UUID, in its stream consecutively and in order: nothing
-- written, the stored positions returned), 2 wrong expected version, 3 stream exists, 4
-- stream not found, 5 stream deleted, 6 duplicate event UUIDs, 7 not written because another
-- part of its unit failed. Checks run under the counter row lock, taken first and held to
-- commit, and each statement of a plpgsql function sees every commit before it (READ
-- COMMITTED), so a check cannot race with another append (a soft delete that does not take
-- that lock is caught when the stream row is updated, see below). Only parts whose p_check is true
-- (their caller gave event UUIDs) are looked up; store-assigned UUIDs are fresh. The
-- search_path is fixed so that a caller's connection (appends in the caller's transaction)
-- may call it schema-qualified whatever its own search_path.
CREATE OR REPLACE FUNCTION append_events_v2(
    p_stream_uuids    text[],
    p_expected        bigint[],
    p_counts          integer[],
    p_units           integer[],
    p_check           boolean[],
    p_event_uuids     uuid[],
    p_event_types     text[],
    p_correlation_ids text[],
    p_causation_ids   text[],
    p_data            bytea[],
    p_metadata        bytea[],
    p_channel         text,
    p_origin          text
) RETURNS TABLE (part integer, status smallint, first_event_id bigint, last_event_id bigint,
                 first_version bigint, actual_version bigint, created_at timestamptz)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_parts    integer := coalesce(array_length(p_stream_uuids, 1), 0);
    v_first    bigint;
    v_last     bigint;
    v_start    integer := 1;   -- first part of the current unit
    v_end      integer;        -- last part of the current unit
    v_offset   integer := 0;   -- events before the current unit
    v_off      integer;
    v_k        integer;
    v_fail     integer;        -- first failing part of the unit (0: none)
    v_found    bigint;         -- events of the unit already stored
    v_match    boolean;        -- every part of the unit stored as a plain retry
    v_sid      bigint[];
    v_ver      bigint[];
    v_st       smallint[];
    v_rfirst   bigint[];
    v_rlast    bigint[];
    v_rvfirst  bigint[];
    v_rvlast   bigint[];
    v_n        bigint;
    v_dmin     bigint;
    v_dmax     bigint;
    v_same     boolean;
    v_deleted  boolean;
    v_exp      bigint;
    v_id       bigint;
    v_version  bigint;
    v_a        bigint;
    v_b        bigint;
    v_c        bigint;
    v_d        bigint;
BEGIN
    SELECT c.last_event_id INTO v_last FROM event_counter AS c WHERE c.id = 1 FOR UPDATE;
    v_first := v_last + 1;
    created_at := now();
    WHILE v_start <= v_parts LOOP
        v_end := v_start;
        WHILE v_end < v_parts AND p_units[v_end + 1] = p_units[v_start] LOOP
            v_end := v_end + 1;
        END LOOP;
        -- Check every part of the unit before writing any.
        v_fail := 0;
        v_found := 0;
        v_match := true;
        v_off := v_offset;
        FOR k IN v_start .. v_end LOOP
            v_k := k - v_start + 1;
            SELECT s.stream_id, s.stream_version, s.deleted_at IS NOT NULL
            INTO v_id, v_version, v_deleted
            FROM streams AS s WHERE s.stream_uuid = p_stream_uuids[k];
            IF NOT FOUND THEN
                v_id := NULL;
                v_version := 0;
                v_deleted := false;
            END IF;
            v_sid[v_k] := v_id;
            v_ver[v_k] := v_version;
            v_exp := p_expected[k];
            v_st[v_k] := CASE
                WHEN v_deleted THEN 5
                WHEN v_exp = -1 THEN 0
                WHEN v_exp = -2 THEN CASE WHEN v_ver[v_k] = 0 THEN 0 ELSE 3 END
                WHEN v_exp = -3 THEN CASE WHEN v_ver[v_k] > 0 THEN 0 ELSE 4 END
                WHEN v_ver[v_k] = v_exp THEN 0
                ELSE 2 END;
            IF v_deleted AND v_fail = 0 THEN
                v_fail := k;
            END IF;
            v_n := 0;
            IF p_check[k] THEN
                SELECT count(*), min(e.stream_version - u.ord), max(e.stream_version - u.ord),
                       coalesce(bool_and(e.stream_id = v_sid[v_k]), false),
                       min(e.event_id), max(e.event_id), min(e.stream_version),
                       max(e.stream_version)
                INTO v_n, v_dmin, v_dmax, v_same, v_a, v_b, v_c, v_d
                FROM unnest(p_event_uuids[v_off + 1 : v_off + p_counts[k]])
                         WITH ORDINALITY AS u(id, ord)
                JOIN events AS e ON e.event_uuid = u.id;
                v_rfirst[v_k] := v_a;
                v_rlast[v_k] := v_b;
                v_rvfirst[v_k] := v_c;
                v_rvlast[v_k] := v_d;
                v_found := v_found + v_n;
            END IF;
            IF NOT (v_n = p_counts[k] AND v_dmin = v_dmax AND v_same) THEN
                v_match := false;
            END IF;
            v_off := v_off + p_counts[k];
        END LOOP;
        IF v_fail = 0 AND v_found > 0 THEN
            IF NOT v_match THEN
                FOR k IN v_start .. v_end LOOP
                    v_st[k - v_start + 1] := 6;
                END LOOP;
            ELSE
                FOR k IN v_start .. v_end LOOP
                    v_st[k - v_start + 1] := 1;
                END LOOP;
            END IF;
        END IF;
        IF v_fail = 0 THEN
            FOR k IN v_start .. v_end LOOP
                IF v_st[k - v_start + 1] NOT IN (0, 1) THEN
                    v_fail := k;
                    EXIT;
                END IF;
            END LOOP;
        END IF;
        -- Write the unit, or report why not.
        v_off := v_offset;
        FOR k IN v_start .. v_end LOOP
            v_k := k - v_start + 1;
            part := k;
            IF v_fail <> 0 THEN
                status := CASE WHEN k = v_fail THEN v_st[v_k] ELSE 7 END;
                first_event_id := NULL;
                last_event_id := NULL;
                first_version := NULL;
                actual_version := nullif(v_ver[v_k], 0);
            ELSIF v_st[v_k] = 1 THEN
                status := 1;
                first_event_id := v_rfirst[v_k];
                last_event_id := v_rlast[v_k];
                first_version := v_rvfirst[v_k];
                actual_version := v_rvlast[v_k];
            ELSE
                IF v_sid[v_k] IS NULL THEN
                    INSERT INTO streams (stream_uuid) VALUES (p_stream_uuids[k])
                    RETURNING stream_id INTO v_id;
                    v_sid[v_k] := v_id;
                END IF;
                INSERT INTO events (event_id, stream_id, stream_version, event_type,
                                    correlation_id, causation_id, data, metadata, created_at,
                                    event_uuid)
                SELECT v_last + o, v_sid[v_k], v_ver[v_k] + o, p_event_types[v_off + o],
                       p_correlation_ids[v_off + o], p_causation_ids[v_off + o],
                       p_data[v_off + o], p_metadata[v_off + o], created_at,
                       p_event_uuids[v_off + o]
                FROM generate_series(1, p_counts[k]) AS o;
                UPDATE streams SET stream_version = v_ver[v_k] + p_counts[k]
                WHERE stream_id = v_sid[v_k] AND deleted_at IS NULL;
                IF NOT FOUND THEN
                    -- Soft-deleted since the check (by a writer that does not take the
                    -- counter lock): nothing of this group commits; the store then retries
                    -- each append alone, and this one meets the deleted stream.
                    RAISE EXCEPTION 'stream % was deleted during the append', p_stream_uuids[k]
                        USING ERRCODE = 'integrity_constraint_violation';
                END IF;
                status := 0;
                first_event_id := v_last + 1;
                last_event_id := v_last + p_counts[k];
                first_version := v_ver[v_k] + 1;
                actual_version := v_ver[v_k] + p_counts[k];
                v_last := v_last + p_counts[k];
            END IF;
            v_off := v_off + p_counts[k];
            RETURN NEXT;
        END LOOP;
        v_offset := v_off;
        v_start := v_end + 1;
    END LOOP;
    IF v_last >= v_first THEN
        UPDATE event_counter SET last_event_id = v_last WHERE id = 1;
        PERFORM pg_notify(p_channel, v_first || ',' || v_last || ',' || p_origin);
    END IF;
END
$$;

-- Subscription info: which store instance took a subscription's lock last (whether it still
-- holds it is read from pg_locks).
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS holder text;

-- Events a subscription gave up on (nack "park", or retries exhausted): counted by
-- subscription info now; filled and replayed by nack/park.
CREATE TABLE IF NOT EXISTS parked_events (
    stream_uuid        text        NOT NULL,
    subscription_name  text        NOT NULL,
    event_id           bigint      NOT NULL,
    reason             text,
    retries            integer     NOT NULL DEFAULT 0,
    parked_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_uuid, subscription_name, event_id)
);
-- replay_parked marks the rows to deliver again; the subscription holding the name picks them
-- up (in this or another process) and removes each once it is acked.
ALTER TABLE parked_events ADD COLUMN IF NOT EXISTS replay boolean NOT NULL DEFAULT false;

-- Deletes a stream: softly (marked deleted; its events stay in $all) or for good (the
-- stream row, its events, its links, the links of other streams to its events and its
-- subscriptions' checkpoints). Expected version: an int >= 0, -1 ANY_VERSION or -3
-- STREAM_EXISTS. Status: 0 deleted, 2 wrong expected version (actual_version says which), 4
-- stream not found (checked first; a stream exists once it has an event), 5 already soft-
-- deleted (a hard delete of a soft-deleted stream is allowed). Takes the counter row lock
-- first, like every append and link, so a delete and an append never interleave (an append
-- that waited for the delete then finds the stream deleted or gone) and the lock order is
-- the same everywhere (counter, then stream row). The NOTIFY ('delete,origin,stream_uuid')
-- ends the stream's subscriptions in other processes.
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

-- Links existing events into a stream after its last position, without copying them: the
-- stream's version (its last event_number) is shared by its own events and its links.
-- Expected version as for appends (-1 ANY_VERSION, -2 NO_STREAM, -3 STREAM_EXISTS); a missing
-- stream is created when the expected version allows it. Status: 0 linked (first_version and
-- actual_version: the positions given), 2 wrong expected version, 3 stream exists, 4 stream
-- not found, 5 stream soft-deleted, 6 an event is in the stream already (linked before, or
-- one of its own events), 8 no such event; bad_event_id names the event for 6 and 8. Nothing
-- is written unless the status is 0. Under the counter row lock, taken first: a hard delete
-- cannot remove a linked event between the check and the commit, and an append to the same
-- stream waits for the link (or the link for it), so positions follow commit order. The
-- NOTIFY ('link,origin,stream_uuid') wakes the stream's subscriptions in other processes.
CREATE OR REPLACE FUNCTION link_events(
    p_stream_uuid text,
    p_expected    bigint,
    p_event_ids   bigint[],
    p_channel     text,
    p_origin      text
) RETURNS TABLE (status smallint, first_version bigint, actual_version bigint,
                 bad_event_id bigint)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_id       bigint;
    v_version  bigint;
    v_deleted  boolean;
    v_n        integer := coalesce(cardinality(p_event_ids), 0);
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
    IF status = 0 THEN
        SELECT u.id INTO bad_event_id
        FROM unnest(p_event_ids) WITH ORDINALITY AS u(id, ord)
        WHERE NOT EXISTS (SELECT 1 FROM events AS e WHERE e.event_id = u.id)
        ORDER BY u.ord LIMIT 1;
        IF bad_event_id IS NOT NULL THEN
            status := 8;
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

-- The `eventsourcing` persistence module (eventstore_actors.eventsourcing): the position each
-- downstream application has processed (one row per application, moved forward only, written
-- in the same transaction as the events it led to), and aggregate snapshots with their history
-- (the library reads the latest at or below a version, so every snapshot is kept).
CREATE TABLE IF NOT EXISTS eventsourcing_tracking (
    application_name  text    PRIMARY KEY,
    notification_id   bigint  NOT NULL
);
CREATE TABLE IF NOT EXISTS eventsourcing_snapshots (
    originator_id       text    NOT NULL,
    originator_version  bigint  NOT NULL,
    topic               text    NOT NULL,
    state               bytea   NOT NULL,
    CONSTRAINT eventsourcing_snapshots_pkey PRIMARY KEY (originator_id, originator_version)
);

INSERT INTO schema_version (version) VALUES (2) ON CONFLICT (version) DO NOTHING;
