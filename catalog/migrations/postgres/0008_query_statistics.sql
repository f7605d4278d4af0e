-- The PostgreSQL form of ../0008_query_statistics.sql: the same version, tables and columns, in
-- PostgreSQL's types (BIGINT, BYTEA, identity keys).
-- What each statement cost: planning time, bytes returned and scanned, files and
-- partitions read and pruned, the materialized view that answered it, whether the result
-- cache did, its peak memory and spilled bytes; and the front door it came through.
ALTER TABLE query_history ADD COLUMN front_door TEXT NOT NULL DEFAULT 'flight';
ALTER TABLE query_history ADD COLUMN planning_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE query_history ADD COLUMN bytes_returned BIGINT NOT NULL DEFAULT 0;
ALTER TABLE query_history ADD COLUMN bytes_scanned BIGINT NOT NULL DEFAULT 0;
ALTER TABLE query_history ADD COLUMN files_scanned BIGINT NOT NULL DEFAULT 0;
ALTER TABLE query_history ADD COLUMN partitions_scanned BIGINT NOT NULL DEFAULT 0;
ALTER TABLE query_history ADD COLUMN partitions_pruned BIGINT NOT NULL DEFAULT 0;
ALTER TABLE query_history ADD COLUMN materialized_view TEXT;
ALTER TABLE query_history ADD COLUMN result_cache_hit BIGINT NOT NULL DEFAULT 0;
ALTER TABLE query_history ADD COLUMN peak_memory_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE query_history ADD COLUMN spilled_bytes BIGINT NOT NULL DEFAULT 0;
