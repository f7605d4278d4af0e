-- Views (CREATE VIEW): a saved query, planned again whenever the catalog changes.
-- `columns` is the JSON list of the columns the query gave when the view was created or
-- replaced ([{"name": …, "type": …}]), so a base that lost or renamed one is reported by
-- name instead of answering with other columns.
CREATE TABLE views (
    id          INTEGER PRIMARY KEY,
    database_id INTEGER NOT NULL REFERENCES databases(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    query       TEXT NOT NULL,
    -- The database unqualified names in the query resolve in: the creating session's.
    resolve_in  TEXT NOT NULL,
    columns     TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (database_id, name)
);
