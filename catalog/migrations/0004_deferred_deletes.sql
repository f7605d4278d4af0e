-- Files Tarn replaced in its own storage (rollup partitions, dropped views): deleted once
-- no query planned before the replacement can still be reading them. The rows are kept in
-- the catalog, so a process that exits before the time comes leaves the work to the next.
CREATE TABLE deferred_deletes (
    id       INTEGER PRIMARY KEY,
    location TEXT NOT NULL,            -- URL of the table the files belonged to
    path     TEXT NOT NULL,            -- object path in that location's store
    due_at   TEXT NOT NULL             -- RFC 3339, UTC
);
CREATE INDEX deferred_deletes_due ON deferred_deletes (due_at);
