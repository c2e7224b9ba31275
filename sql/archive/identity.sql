-- Who this store is (store_identity, migrations/v7.sql), for the marker file that makes an
-- archive target one store's own (lifecycle/archive/files.py): its store_id and the database
-- it lives in (with the schema, named by the caller, for the message that refuses another
-- store's target).
SELECT i.store_id::text, current_database()::text FROM store_identity AS i WHERE i.id = 1;
