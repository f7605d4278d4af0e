-- The PostgreSQL form of ../0007_query_history.sql: the same version, tables and columns, in
-- PostgreSQL's types (BIGINT, BYTEA, identity keys).
-- Every statement a server or command ran: who ran what, how it ended, how long it waited
-- and ran, and how many rows it returned. Rows older than the retention are removed as new
-- ones arrive.
CREATE TABLE query_history (
    query_id      TEXT PRIMARY KEY,
    user_name     TEXT NOT NULL,
    database_name TEXT NOT NULL,
    sql_text      TEXT NOT NULL,
    state         TEXT NOT NULL,      -- finished, failed, cancelled, timeout, resource_exhausted, refused
    submitted_at  TEXT NOT NULL,      -- RFC 3339, UTC
    queued_ms     BIGINT NOT NULL,
    execution_ms  BIGINT NOT NULL,
    rows_returned BIGINT NOT NULL,
    error         TEXT
);
CREATE INDEX query_history_submitted ON query_history (submitted_at);
CREATE INDEX query_history_user ON query_history (user_name, submitted_at);
