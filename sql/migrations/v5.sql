-- Schema version 5 (migration from version 4). Applied like the earlier migrations: one
-- transaction, under the migration lock, with search_path set to the store's schema and
-- pg_temp last. Each topic writes its own block; nothing is removed or renamed.

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
