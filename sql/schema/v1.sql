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

INSERT INTO schema_version (version) VALUES (1) ON CONFLICT (version) DO NOTHING;
