//! Crawlers as catalog objects: a named location with its crawl options and an optional
//! cron schedule, run on demand (`tarn crawler run`), by the server's scheduler, or by
//! `tarn crawler run-due` from an external scheduler. Every run is recorded in the crawl
//! history under the crawler's name.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use croner::Cron;

use super::{CrawlOptions, CrawlSummary, Crawler};
use crate::catalog::{Catalog, CrawlerDef};
use crate::error::{Error, Result};
use crate::storage::StoreRegistry;

/// Parses a cron expression: 5 fields (minute hour day month weekday), or 6 with seconds
/// first; names (`MON`, `JAN`) and `@hourly`-style nicknames work.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the expression and what is wrong with it.
pub fn parse_schedule(schedule: &str) -> Result<Cron> {
    schedule.parse::<Cron>().map_err(|e| {
        Error::InvalidArgument(format!(
            "schedule '{schedule}' is not a cron expression ({e}); use 5 fields, e.g. \
             '*/15 * * * *' for every 15 minutes, or '@hourly'"
        ))
    })
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// When `crawler` should next run: the first schedule time after its last start (or its
/// creation). `None` for a crawler without a schedule.
///
/// # Errors
/// When the stored schedule no longer parses.
pub fn next_run(crawler: &CrawlerDef) -> Result<Option<DateTime<Utc>>> {
    let Some(schedule) = &crawler.schedule else {
        return Ok(None);
    };
    let cron = parse_schedule(schedule)?;
    let since = crawler
        .last_started_at
        .as_deref()
        .and_then(parse_time)
        .or_else(|| parse_time(&crawler.created_at))
        .unwrap_or_else(Utc::now);
    cron.find_next_occurrence(&since, false)
        .map(Some)
        .map_err(|e| Error::InvalidArgument(format!("schedule '{schedule}': {e}")))
}

/// The crawl options a crawler runs with.
pub fn crawl_options(crawler: &CrawlerDef) -> CrawlOptions {
    CrawlOptions {
        crawler: Some(crawler.name.clone()),
        ..CrawlOptions::new(&crawler.database, crawler.options.clone())
    }
}

/// Runs one crawler now.
///
/// # Errors
/// As [`Crawler::crawl`].
pub async fn run(
    catalog: &Catalog,
    stores: &Arc<StoreRegistry>,
    crawler: &CrawlerDef,
    now: DateTime<Utc>,
) -> Result<CrawlSummary> {
    catalog
        .crawler_started(
            &crawler.name,
            &now.to_rfc3339_opts(SecondsFormat::Millis, true),
        )
        .await?;
    crawl_now(catalog, stores, crawler).await
}

/// Crawls a crawler's location with its options (its start is already recorded).
async fn crawl_now(
    catalog: &Catalog,
    stores: &Arc<StoreRegistry>,
    crawler: &CrawlerDef,
) -> Result<CrawlSummary> {
    let crawl = Crawler::new(catalog.clone(), Arc::clone(stores));
    match &crawler.options.events_queue {
        Some(queue) => {
            let queue = super::events::Queue::new(queue)?;
            let first_run = crawler.last_started_at.is_none();
            crawl
                .crawl_events(
                    &crawler.location,
                    &crawl_options(crawler),
                    &queue,
                    first_run,
                )
                .await
        }
        None => {
            crawl
                .crawl(&crawler.location, &crawl_options(crawler))
                .await
        }
    }
}

/// Runs every scheduled crawler whose next run is at or before `now`, one after another;
/// returns each one's name and outcome. A crawler that fails does not stop the others.
///
/// # Errors
/// [`Error::Catalog`] when the crawlers cannot be read.
pub async fn run_due(
    catalog: &Catalog,
    stores: &Arc<StoreRegistry>,
    now: DateTime<Utc>,
) -> Result<Vec<(String, Result<CrawlSummary>)>> {
    let mut outcomes = Vec::new();
    for crawler in catalog.crawlers().await? {
        let due = match next_run(&crawler) {
            Ok(Some(at)) => at <= now,
            Ok(None) => false,
            Err(e) => {
                outcomes.push((crawler.name.clone(), Err(e)));
                continue;
            }
        };
        if !due {
            continue;
        }
        // Processes sharing a catalog each find the run due: the one whose claim lands
        // runs it, the others skip it.
        let at = now.to_rfc3339_opts(SecondsFormat::Millis, true);
        if !catalog
            .claim_crawler_run(&crawler.name, crawler.last_started_at.as_deref(), &at)
            .await?
        {
            tracing::debug!(crawler = %crawler.name, "another process started this scheduled crawl");
            continue;
        }
        let outcome = crawl_now(catalog, stores, &crawler).await;
        if let Err(e) = &outcome {
            tracing::warn!(crawler = %crawler.name, error = %e, "scheduled crawl failed");
        }
        outcomes.push((crawler.name.clone(), outcome));
    }
    Ok(outcomes)
}

/// The server's scheduler: checks for due crawlers every `every` until the process ends,
/// and calls `after_tick` after each check with the summaries of the crawls it ran (the
/// server refreshes stale rollups there and reports failed refreshes in those crawls).
pub async fn schedule_loop(
    catalog: Catalog,
    stores: Arc<StoreRegistry>,
    every: std::time::Duration,
    after_tick: impl Fn(Vec<CrawlSummary>) + Send + 'static,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let mut crawled = Vec::new();
        match run_due(&catalog, &stores, Utc::now()).await {
            Ok(outcomes) => {
                for (name, outcome) in outcomes {
                    if let Ok(summary) = outcome {
                        tracing::info!(
                            crawler = %name,
                            added = summary.files_added,
                            removed = summary.files_removed,
                            problems = summary.problems.len(),
                            "scheduled crawl finished"
                        );
                        crawled.push(summary);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read the crawlers"),
        }
        after_tick(crawled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crawler(schedule: Option<&str>, created: &str, last: Option<&str>) -> CrawlerDef {
        CrawlerDef {
            name: "c".into(),
            location: "file:///lake/".into(),
            database: "default".into(),
            options: Default::default(),
            schedule: schedule.map(str::to_string),
            created_at: created.into(),
            last_started_at: last.map(str::to_string),
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        parse_time(text).unwrap()
    }

    #[test]
    fn next_run_follows_the_last_start() {
        let c = crawler(Some("*/15 * * * *"), "2026-01-01T10:01:00Z", None);
        assert_eq!(next_run(&c).unwrap(), Some(at("2026-01-01T10:15:00Z")));
        let c = crawler(
            Some("*/15 * * * *"),
            "2026-01-01T10:01:00Z",
            Some("2026-01-01T10:15:00Z"),
        );
        assert_eq!(next_run(&c).unwrap(), Some(at("2026-01-01T10:30:00Z")));
        let c = crawler(Some("@daily"), "2026-01-01T10:01:00Z", None);
        assert_eq!(next_run(&c).unwrap(), Some(at("2026-01-02T00:00:00Z")));
        assert_eq!(
            next_run(&crawler(None, "2026-01-01T10:01:00Z", None)).unwrap(),
            None
        );
    }

    #[test]
    fn bad_schedules_are_explained() {
        let err = parse_schedule("every hour").unwrap_err().to_string();
        assert!(
            err.contains("'every hour' is not a cron expression"),
            "{err}"
        );
        assert!(parse_schedule("0 * * * *").is_ok());
    }
}
