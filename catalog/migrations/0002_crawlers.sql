-- Crawlers as catalog objects: a location, its crawl options and an optional schedule.
CREATE TABLE crawlers (
    id               INTEGER PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    location         TEXT NOT NULL,
    database         TEXT NOT NULL,
    options          TEXT NOT NULL,            -- JSON CrawlerOptions
    schedule         TEXT,                     -- cron expression; NULL: run on demand
    created_at       TEXT NOT NULL,
    last_started_at  TEXT
);

-- Which crawler ran a crawl (NULL for ad-hoc crawls).
ALTER TABLE crawls ADD COLUMN crawler TEXT;
CREATE INDEX crawls_by_crawler ON crawls (crawler, id);
