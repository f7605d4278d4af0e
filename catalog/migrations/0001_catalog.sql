-- Tarn catalog, first version.
-- Every write that changes what queries see bumps catalog_state.generation in the same
-- transaction, so readers can tell cheaply whether their cached view is stale.

CREATE TABLE catalog_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    generation  INTEGER NOT NULL
);
INSERT INTO catalog_state (id, generation) VALUES (1, 0);

CREATE TABLE databases (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL
);
INSERT INTO databases (name, description, created_at)
VALUES ('default', 'The default database', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

CREATE TABLE tables (
    id                INTEGER PRIMARY KEY,
    database_id       INTEGER NOT NULL REFERENCES databases(id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    location          TEXT NOT NULL,            -- URL ending in '/'
    format            TEXT NOT NULL,            -- 'parquet'
    partition_columns TEXT NOT NULL,            -- JSON [{"name":..,"type":..}]
    schema_version    INTEGER NOT NULL,         -- current row in schema_versions
    properties        TEXT NOT NULL DEFAULT '{}',
    version           INTEGER NOT NULL,         -- bumped on every change to files or schema
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    UNIQUE (database_id, name)
);

-- Every schema a table has had. `schema` is the Arrow IPC schema message of the file
-- columns (partition columns are in tables.partition_columns).
CREATE TABLE schema_versions (
    table_id    INTEGER NOT NULL REFERENCES tables(id) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    schema      BLOB NOT NULL,
    columns     TEXT NOT NULL,                  -- human-readable "name type" list
    created_at  TEXT NOT NULL,
    PRIMARY KEY (table_id, version)
);

CREATE TABLE partitions (
    id          INTEGER PRIMARY KEY,
    table_id    INTEGER NOT NULL REFERENCES tables(id) ON DELETE CASCADE,
    "values"    TEXT NOT NULL,                  -- JSON array of strings or nulls, in column order
    location    TEXT NOT NULL,                  -- path of the partition folder in its store
    file_count  INTEGER NOT NULL,
    total_bytes INTEGER NOT NULL,
    row_count   INTEGER NOT NULL,
    UNIQUE (table_id, location)
);

-- Distinct file schemas (Arrow IPC schema messages), shared by the files that have them,
-- so a re-crawl can merge schemas without reading unchanged footers again.
CREATE TABLE file_schemas (
    id          INTEGER PRIMARY KEY,
    schema      BLOB NOT NULL UNIQUE
);

CREATE TABLE data_files (
    id              INTEGER PRIMARY KEY,
    table_id        INTEGER NOT NULL REFERENCES tables(id) ON DELETE CASCADE,
    partition_id    INTEGER REFERENCES partitions(id) ON DELETE CASCADE,
    path            TEXT NOT NULL,              -- object path inside the store
    size            INTEGER NOT NULL,
    e_tag           TEXT,
    last_modified   TEXT NOT NULL,
    row_count       INTEGER NOT NULL,
    footer_size     INTEGER,                    -- metadata size hint for readers
    file_schema_id  INTEGER NOT NULL REFERENCES file_schemas(id),
    stats           TEXT NOT NULL,              -- JSON {column: {min, max, nulls}}
    UNIQUE (table_id, path)
);
CREATE INDEX data_files_partition ON data_files (partition_id);

CREATE TABLE crawls (
    id           INTEGER PRIMARY KEY,
    location     TEXT NOT NULL,
    database     TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    status       TEXT NOT NULL,                 -- 'running' | 'succeeded' | 'failed'
    summary      TEXT                           -- JSON CrawlSummary
);
