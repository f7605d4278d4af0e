-- The PostgreSQL form of ../0005_stats_version.sql: the same version, tables and columns, in
-- PostgreSQL's types (BIGINT, BYTEA, identity keys).
-- Which version of the per-file statistics a file's row holds (see STATS_VERSION in the
-- catalog model): a re-crawl reads again the footers of Parquet files recorded with an
-- older one, so statistics added later (distinct counts) reach files crawled before.
ALTER TABLE data_files ADD COLUMN stats_version BIGINT NOT NULL DEFAULT 0;
