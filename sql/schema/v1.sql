-- Schema version 1 of eventstore-actors. Applied by admin.init in one transaction with
-- search_path set to the store's schema; every statement is idempotent.

CREATE TABLE IF NOT EXISTS schema_version (
    version     integer     PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- One row: the last global event_id handed out. Every append locks it until commit, which
-- is what makes event_ids gap-free and handed out in commit order.
CREATE TABLE IF NOT EXISTS event_counter (
    id             smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    last_event_id  bigint   NOT NULL
);
INSERT INTO event_counter (id, last_event_id) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;

CREATE TABLE IF NOT EXISTS streams (
    stream_id       bigserial   PRIMARY KEY,
    stream_uuid     text        NOT NULL UNIQUE,
    stream_version  bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS events (
    event_id        bigint      PRIMARY KEY,
    stream_id       bigint      NOT NULL,
    stream_version  bigint      NOT NULL,
    event_type      text        NOT NULL,
    correlation_id  text,
    causation_id    text,
    data            bytea       NOT NULL,
    metadata        bytea,
    created_at      timestamptz NOT NULL,
    -- Rejects the loser of two appends computed from the same expected version.
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version)
);

CREATE TABLE IF NOT EXISTS subscriptions (
    subscription_id    bigserial   PRIMARY KEY,
    stream_uuid        text        NOT NULL,
    subscription_name  text        NOT NULL,
    last_seen          bigint      NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT subscriptions_stream_name_key UNIQUE (stream_uuid, subscription_name)
);

CREATE TABLE IF NOT EXISTS snapshots (
    source_uuid     text        PRIMARY KEY,
    source_version  bigint      NOT NULL,
    source_type     text        NOT NULL,
    data            bytea       NOT NULL,
    metadata        bytea,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Events are immutable: the database itself refuses UPDATE and DELETE (TRUNCATE, used only
-- by admin.reset, is allowed).
CREATE OR REPLACE FUNCTION refuse_event_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are immutable: % is not allowed on %', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE OR REPLACE TRIGGER events_immutable
    BEFORE UPDATE OR DELETE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_event_change();

-- Appends a group of requests in one call (one round trip for small batches; large ones use
-- COPY instead). Each request succeeds or fails on its own expected version: a failed one
-- returns a NULL first_event_id and the stream's actual version (NULL: no such stream).
-- Must run inside the caller's transaction; the counter row lock is held to its commit.
CREATE OR REPLACE FUNCTION append_events(
    p_stream_uuids    text[],
    p_expected        bigint[],
    p_counts          integer[],
    p_event_types     text[],
    p_correlation_ids text[],
    p_causation_ids   text[],
    p_data            bytea[],
    p_metadata        bytea[],
    p_channel         text,
    p_origin          text
) RETURNS TABLE (request integer, first_event_id bigint, actual_version bigint, created_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_first    bigint;
    v_last     bigint;
    v_offset   integer := 0;
    v_stream   bigint;
    v_version  bigint;
    v_count    integer;
BEGIN
    SELECT c.last_event_id INTO v_last FROM event_counter AS c WHERE c.id = 1 FOR UPDATE;
    v_first := v_last + 1;
    created_at := now();
    FOR i IN 1 .. coalesce(array_length(p_stream_uuids, 1), 0) LOOP
        v_count := p_counts[i];
        SELECT s.stream_id, s.stream_version INTO v_stream, v_version
        FROM streams AS s WHERE s.stream_uuid = p_stream_uuids[i];
        IF NOT FOUND THEN
            v_stream := NULL;
            v_version := 0;
        END IF;
        request := i;
        IF v_version <> p_expected[i] OR (v_stream IS NULL AND p_expected[i] <> 0) THEN
            first_event_id := NULL;
            actual_version := nullif(v_version, 0);
        ELSE
            IF v_stream IS NULL THEN
                INSERT INTO streams (stream_uuid) VALUES (p_stream_uuids[i])
                RETURNING stream_id INTO v_stream;
            END IF;
            INSERT INTO events (event_id, stream_id, stream_version, event_type, correlation_id,
                                causation_id, data, metadata, created_at)
            SELECT v_last + o, v_stream, v_version + o, p_event_types[v_offset + o],
                   p_correlation_ids[v_offset + o], p_causation_ids[v_offset + o],
                   p_data[v_offset + o], p_metadata[v_offset + o], created_at
            FROM generate_series(1, v_count) AS o;
            UPDATE streams SET stream_version = v_version + v_count WHERE stream_id = v_stream;
            first_event_id := v_last + 1;
            actual_version := v_version + v_count;
            v_last := v_last + v_count;
        END IF;
        v_offset := v_offset + v_count;
        RETURN NEXT;
    END LOOP;
    IF v_last >= v_first THEN
        UPDATE event_counter SET last_event_id = v_last WHERE id = 1;
        PERFORM pg_notify(p_channel, v_first || ',' || v_last || ',' || p_origin);
    END IF;
END
$$;

INSERT INTO schema_version (version) VALUES (1) ON CONFLICT (version) DO NOTHING;
