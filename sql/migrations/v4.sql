-- Schema version 4 (migration from version 3). Applied like v2.sql and v3.sql: one
-- transaction, under the migration lock, with search_path set to the store's schema and
-- pg_temp last. Each topic writes its own block; nothing is removed or renamed.

-- v4 block: personal data
-- Encryption per data subject and forgetting (crypto-shredding), see
-- docs/personal-data.md. An event's or snapshot's `subject` names the person whose data it
-- carries; its data is then stored encrypted under that subject's own data key. Forgetting
-- deletes the key and marks the subject forgotten: the events stay, unreadable. Nothing is
-- removed or renamed: writers of release 3 still running keep working (they never write a
-- subject). Columns are added without a default: no table rewrite.
ALTER TABLE events ADD COLUMN IF NOT EXISTS subject text;
ALTER TABLE snapshots ADD COLUMN IF NOT EXISTS subject text;
-- forget_subject counts a subject's events.
CREATE INDEX IF NOT EXISTS events_subject_idx ON events (subject) WHERE subject IS NOT NULL;

-- Data keys wrapped by the master key (AES key wrap of a 32-byte AES-256-GCM key); absent
-- when the application keeps its keys in a KeyStore of its own.
CREATE TABLE IF NOT EXISTS data_keys (
    subject      text        PRIMARY KEY,
    wrapped_key  bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Subjects forgotten for good: reads return their data as FORGOTTEN, writes are refused.
CREATE TABLE IF NOT EXISTS forgotten_subjects (
    subject       text        PRIMARY KEY,
    forgotten_at  timestamptz NOT NULL DEFAULT now()
);

-- No event or snapshot of a forgotten subject is ever written. Appends check their events'
-- subjects once, with refuse_forgotten_subjects, after taking the counter row lock (as
-- forget_subject does first): VOLATILE, so its query sees every commit before it, and an
-- append that waited for a forget finds the subject forgotten. (A trigger per event row cost
-- about as much as the insert itself.) Snapshots are refused by a trigger. Messages name no
-- subject (they may reach logs).
CREATE OR REPLACE FUNCTION refuse_forgotten_subjects(p_subjects text[]) RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM forgotten_subjects AS f WHERE f.subject = ANY(p_subjects)) THEN
        RAISE EXCEPTION 'the data subject of this write is forgotten'
            USING ERRCODE = 'EAF01';
    END IF;
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION refuse_forgotten_subject() RETURNS trigger
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM forgotten_subjects AS f WHERE f.subject = NEW.subject) THEN
        RAISE EXCEPTION 'the data subject of this write is forgotten'
            USING ERRCODE = 'EAF01';
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER snapshots_subject_not_forgotten
    BEFORE INSERT OR UPDATE ON snapshots
    FOR EACH ROW WHEN (NEW.subject IS NOT NULL)
    EXECUTE FUNCTION refuse_forgotten_subject();

-- append_events_v2 with each event's subject (p_subjects, NULL for none); otherwise the
-- same function (see v2.sql). Release 3 writers keep calling append_events_v2.
CREATE OR REPLACE FUNCTION append_events_v4(
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
    p_subjects        text[],
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
    IF EXISTS (SELECT 1 FROM unnest(p_subjects) AS u(subject) WHERE u.subject IS NOT NULL) THEN
        PERFORM refuse_forgotten_subjects(p_subjects);  -- under the counter lock
    END IF;
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
                                    event_uuid, subject)
                SELECT v_last + o, v_sid[v_k], v_ver[v_k] + o, p_event_types[v_off + o],
                       p_correlation_ids[v_off + o], p_causation_ids[v_off + o],
                       p_data[v_off + o], p_metadata[v_off + o], created_at,
                       p_event_uuids[v_off + o], p_subjects[v_off + o]
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

-- end of v4 block: personal data

-- v4 block: archive
-- Archiving to Parquet (lifecycle/archive): the manifest of the files that hold the oldest
-- events. Archived ranges are always a prefix of the log (each archive starts right after the
-- last one), so the highest last_event_id says which event_ids a read takes from the files.
-- state: 'recorded' once the file is written, fsynced and listed here (its rows may still be
-- in events, being deleted in ascending batches); 'deleted' once they are all gone.
CREATE TABLE IF NOT EXISTS archive_files (
    archive_id      bigserial   PRIMARY KEY,
    url             text        NOT NULL UNIQUE,
    first_event_id  bigint      NOT NULL,
    last_event_id   bigint      NOT NULL,
    event_count     bigint      NOT NULL,
    state           text        NOT NULL DEFAULT 'recorded'
                                CHECK (state IN ('recorded', 'deleted')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    CONSTRAINT archive_files_range_key UNIQUE (first_event_id),
    CONSTRAINT archive_files_range_check CHECK (first_event_id <= last_event_id)
);
-- The Parquet files carry each event's subject (crypto-shredding adds the same column).
ALTER TABLE events ADD COLUMN IF NOT EXISTS subject text;
-- end of v4 block: archive

-- v4 block: retention
-- Per-stream retention (lifecycle/retention.py). first_version: every position below it is
-- hidden for good (truncate_stream, and the limits in force when they are changed); max_count
-- and max_age: limits applied by every read as it runs (storage/retention.py). Hidden rows
-- are deleted later, in bounded batches, by the scavenger actor (lifecycle/scavenger.py).
-- Adding columns with a constant default or none rewrites nothing.
ALTER TABLE streams ADD COLUMN IF NOT EXISTS first_version bigint NOT NULL DEFAULT 1;
ALTER TABLE streams ADD COLUMN IF NOT EXISTS max_count bigint;
ALTER TABLE streams ADD COLUMN IF NOT EXISTS max_age interval;
-- The streams the scavenger visits: those with anything hidden or a limit.
CREATE INDEX IF NOT EXISTS streams_retention_idx ON streams (stream_id)
    WHERE first_version > 1 OR max_count IS NOT NULL OR max_age IS NOT NULL;
-- end of v4 block: retention

-- v4 block: subscription health
-- What a subscription's health needs across processes (subscriptions.health): when its
-- checkpoint last moved (written by the checkpoint UPDATE that already happens on an ack,
-- so an ack costs one column more and an append nothing), and the state its holder last
-- wrote ('live', 'stalled'; 'stopped' once nobody holds it after it gave up on an error),
-- why and when. Written only on a change of state, never per event. Nullable, no default:
-- adding them rewrites nothing and holds the table's lock for a moment only. Locking order:
-- this block locks only subscriptions, which delete_stream() locks after streams and events,
-- so it must stay after any block that locks those (else a concurrent delete could deadlock).
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS last_ack_at timestamptz;
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS health text;
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS health_reason text;
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS health_at timestamptz;
-- end of v4 block: subscription health

INSERT INTO schema_version (version) VALUES (4) ON CONFLICT (version) DO NOTHING;
