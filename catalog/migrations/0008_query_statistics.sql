-- What each statement cost: planning time, bytes returned and scanned, files and
-- partitions read and pruned, the materialized view that answered it, whether the result
-- cache did, its peak memory and spilled bytes; and the front door it came through.
ALTER TABLE query_history ADD COLUMN front_door TEXT NOT NULL DEFAULT 'flight';
ALTER TABLE query_history ADD COLUMN planning_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE query_history ADD COLUMN bytes_returned INTEGER NOT NULL DEFAULT 0;
ALTER TABLE query_history ADD COLUMN bytes_scanned INTEGER NOT NULL DEFAULT 0;
ALTER TABLE query_history ADD COLUMN files_scanned INTEGER NOT NULL DEFAULT 0;
ALTER TABLE query_history ADD COLUMN partitions_scanned INTEGER NOT NULL DEFAULT 0;
ALTER TABLE query_history ADD COLUMN partitions_pruned INTEGER NOT NULL DEFAULT 0;
ALTER TABLE query_history ADD COLUMN materialized_view TEXT;
ALTER TABLE query_history ADD COLUMN result_cache_hit INTEGER NOT NULL DEFAULT 0;
ALTER TABLE query_history ADD COLUMN peak_memory_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE query_history ADD COLUMN spilled_bytes INTEGER NOT NULL DEFAULT 0;
