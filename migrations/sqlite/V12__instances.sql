-- Several servers on one database (the Postgres backend, docs/postgres.md):
-- each serving process registers itself and beats every few seconds; what
-- it holds (reservations) and runs (batch jobs) carries its id, so a
-- starting or surviving instance releases only what a dead one left.
CREATE TABLE instances (
    id           TEXT PRIMARY KEY,
    started_at   INTEGER NOT NULL,
    -- wall-clock ms of the last beat; 0 once it stopped cleanly
    heartbeat_at INTEGER NOT NULL
);

-- the instance whose turn or operation holds it (NULL: from before V12)
ALTER TABLE reservations ADD COLUMN owner TEXT;
-- the instance running the job (NULL: from before V12)
ALTER TABLE jobs ADD COLUMN owner TEXT;

-- Background work that must run once cluster-wide (sweeps): a lease per
-- name, taken when expired or already held by the asker.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
