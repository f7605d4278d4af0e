-- The PostgreSQL form of ../0006_rollup_errors.sql: the same version, tables and columns, in
-- PostgreSQL's types (BIGINT, BYTEA, identity keys).
-- The last failed refresh of a materialized view: when and why. While it is set the view
-- answers no query (the base does), so a view that cannot be refreshed never breaks a
-- dashboard; a successful refresh clears it.
ALTER TABLE rollups ADD COLUMN last_error TEXT;
ALTER TABLE rollups ADD COLUMN last_error_at TEXT;
