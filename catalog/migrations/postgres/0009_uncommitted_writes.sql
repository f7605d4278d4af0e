-- The PostgreSQL form of ../0009_uncommitted_writes.sql: the same version, tables and columns, in
-- PostgreSQL's types (BIGINT, BYTEA, identity keys).
-- Files a writer (an ingest, a view's refresh) is about to write are recorded here before
-- they are written, due for deletion long after the write should have been committed; the
-- commit that catalogues them removes their rows in its transaction. So a writer that is
-- killed, cancelled or fails between its writes and its commit leaves no file behind for
-- good: the next sweep after the grace period deletes what it wrote. A sweep never deletes
-- a file the catalog references.
CREATE INDEX deferred_deletes_location_path ON deferred_deletes (location, path);
