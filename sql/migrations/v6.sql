-- Schema version 6 (migration from version 5). Applied like v2.sql .. v5.sql: one
-- transaction, under the migration lock (with every table of the store locked ACCESS
-- EXCLUSIVE first by storage/schema.py when an existing store is upgraded), with search_path
-- set to the store's schema and pg_temp last. Each topic writes its own block; nothing is
-- removed or renamed.

-- block: stall-vouching
-- Stalls seen by readers without the holder (subscriptions/health.py). Until now only the
-- holding process's monitor applied the stall rule and wrote 'stalled': a holder frozen
-- (SIGSTOP, a C extension holding the GIL, a swapped-out host) kept its lock and its last
-- written 'live', so every reader showed it live while nothing was delivered. Now the
-- holder's monitor vouches for the subscription, renewing the vouch about every
-- stall_after / 2 seconds: vouched_until is the latest time (the database's clock) until
-- which the events it has in flight cannot have stalled, and vouched_by names the holder
-- that wrote it (a vouch by an earlier holder says nothing of the current one: a release-5
-- process taking the name over leaves these columns as they were, and is judged as before).
-- stall_after is the holder's option, written when it claims the name. A reader in any
-- process finds a held subscription with lag > 0 stalled once the vouch of its holder ran
-- out (by a margin) and its oldest unacked event is stall_after old. Nullable, no default:
-- adding them rewrites nothing. Release-5 processes neither read nor write them.
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS stall_after float8;
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS vouched_until timestamptz;
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS vouched_by text;
-- end of block: stall-vouching

INSERT INTO schema_version (version) VALUES (6) ON CONFLICT (version) DO NOTHING;
