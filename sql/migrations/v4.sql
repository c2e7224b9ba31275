-- Schema version 4 (migration from version 3). Applied like v3.sql: one transaction, under the
-- migration lock, with search_path set to the store's schema and pg_temp last. Each feature
-- of release 3 writes its own block below.

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

INSERT INTO schema_version (version) VALUES (4) ON CONFLICT (version) DO NOTHING;
