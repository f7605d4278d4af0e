-- Materialized rollups (CREATE MATERIALIZED VIEW). A rollup's rows live in a catalog table
-- of its own, `<database>.__rollup_<name>`, partitioned like its base table; each file's
-- name carries the fingerprint of the base partition it was computed from, so a partition
-- and its fingerprint change in one table commit.
CREATE TABLE rollups (
    id           INTEGER PRIMARY KEY,
    database_id  INTEGER NOT NULL REFERENCES databases(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    definition   TEXT NOT NULL,                 -- JSON RollupDef
    created_at   TEXT NOT NULL,
    refreshed_at TEXT,
    UNIQUE (database_id, name)
);
