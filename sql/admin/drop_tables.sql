-- Drops every object admin.init creates, for a store living in a shared schema ("public").
DROP TABLE IF EXISTS links, events, streams, event_counter, subscriptions, snapshots, schema_version CASCADE;
DROP FUNCTION IF EXISTS refuse_event_change() CASCADE;
DROP FUNCTION IF EXISTS append_events(text[], bigint[], integer[], text[], text[], text[], bytea[], bytea[], text, text);
