-- Drops every object admin.init creates, and nothing else: no CASCADE, so an application
-- object that depends on one of them (a view on events, a trigger using the function) stops
-- the drop instead of being removed with it. Sequences, indexes and the trigger go with
-- their tables.
DROP TABLE IF EXISTS archive_files, store_identity, hard_deletes;
DROP TABLE IF EXISTS forget_generation, data_keys, forgotten_subjects, eventsourcing_tracking, eventsourcing_snapshots, parked_events, links, events, streams, event_counter, subscriptions, snapshots, schema_version;
DROP FUNCTION IF EXISTS refuse_event_change();
DROP FUNCTION IF EXISTS refuse_stream_delete();
DROP FUNCTION IF EXISTS refuse_deleted_stream_append();
DROP FUNCTION IF EXISTS delete_stream(text, bigint, boolean, text, text);
DROP FUNCTION IF EXISTS link_events(text, bigint, bigint[], text, text);
DROP FUNCTION IF EXISTS link_events_v5(text, bigint, bigint[], bigint[], text[], timestamptz[], text, text);
DROP FUNCTION IF EXISTS append_events(text[], bigint[], integer[], text[], text[], text[], bytea[], bytea[], text, text);
DROP FUNCTION IF EXISTS append_events_v2(text[], bigint[], integer[], integer[], boolean[], uuid[], text[], text[], text[], bytea[], bytea[], text, text);
DROP FUNCTION IF EXISTS append_events_v4(text[], bigint[], integer[], integer[], boolean[], uuid[], text[], text[], text[], bytea[], bytea[], text[], text, text);
DROP FUNCTION IF EXISTS refuse_forgotten_subject();
DROP FUNCTION IF EXISTS refuse_forgotten_subjects(text[]);
DROP FUNCTION IF EXISTS bump_forget_generation();
DROP FUNCTION IF EXISTS archived_event_live(text, bigint, timestamptz);
