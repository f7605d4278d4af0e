//! One way to delete files Tarn replaces: later. A query planned before a replacement (a
//! view's refresh, `INSERT OVERWRITE`, an ingest in replace mode, a compaction) may still
//! be reading the old files, so they are recorded in the catalog and deleted once
//! [`DELETE_GRACE`] has passed, by the next sweep (after a crawl, an ingest or a server
//! tick). Until then crawls leave them out ([`pending`]), so a re-crawl of the table's
//! folder does not bring replaced files back.
//!
//! Files about to be written are recorded the same way before they are written
//! ([`record_writes`]), due after [`UNCOMMITTED_GRACE`]; the commit that catalogues them
//! forgets them. A writer killed or cancelled between its writes and its commit thus leaves
//! nothing behind for good, and a sweep never deletes a file the catalog references.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use object_store::ObjectStoreExt;
use object_store::path::Path;

use crate::catalog::Catalog;
use crate::error::Result;
use crate::storage::{Location, StoreRegistry};

/// How long a replaced file outlives its replacement: a query planned before the
/// replacement may still be reading it.
pub const DELETE_GRACE: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// How long a file written but not yet committed may wait for its commit before a sweep
/// deletes it. Long, as Iceberg's orphan-file removal waits days: a slow writer's files
/// must never be swept from under it.
pub const UNCOMMITTED_GRACE: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// Records that `paths` (objects of the table at `location`) are about to be written, so
/// that they are deleted after [`UNCOMMITTED_GRACE`] unless a commit catalogues them
/// first. Crawls leave them out meanwhile.
///
/// # Errors
/// When the catalog cannot be written: the writer must not write what it could not record.
pub async fn record_writes(catalog: &Catalog, location: &Location, paths: &[String]) -> Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let due = (Utc::now() + UNCOMMITTED_GRACE).to_rfc3339_opts(SecondsFormat::Millis, true);
    catalog
        .defer_deletes(location.url.as_str(), paths, &due)
        .await?;
    Ok(())
}

/// Schedules `paths` (objects of the table at `location`) for deletion after
/// [`DELETE_GRACE`]. A failure only leaves files behind (logged): the catalog no longer
/// references them.
pub async fn defer(catalog: &Catalog, location: &Location, paths: Vec<String>) {
    if paths.is_empty() {
        return;
    }
    let due = (Utc::now() + DELETE_GRACE).to_rfc3339_opts(SecondsFormat::Millis, true);
    if let Err(e) = catalog
        .defer_deletes(location.url.as_str(), &paths, &due)
        .await
    {
        tracing::warn!(location = %location.url, files = paths.len(), error = %e,
            "could not schedule the deletion of replaced files; they stay");
    }
}

/// Deletes the replaced (and never committed) files whose grace period ended by `now`,
/// except those the catalog references. Returns how many records were settled.
///
/// # Errors
/// When the catalog cannot be read or written.
pub async fn sweep(catalog: &Catalog, stores: &StoreRegistry, now: DateTime<Utc>) -> Result<usize> {
    let due = catalog
        .due_deletes(&now.to_rfc3339_opts(SecondsFormat::Millis, true))
        .await?;
    let mut by_location: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (_, location, path, _) in due.iter().filter(|(.., catalogued)| !catalogued) {
        by_location
            .entry(location.as_str())
            .or_default()
            .push(path.clone());
    }
    for (location, paths) in by_location {
        match Location::parse_catalogued(location).and_then(|l| stores.store_for(&l)) {
            Ok(store) => delete_quietly(&store, paths).await,
            Err(e) => tracing::warn!(%location, error = %e, "cannot reach replaced files"),
        }
    }
    let ids: Vec<i64> = due.iter().map(|(id, ..)| *id).collect();
    catalog.forget_deletes(&ids).await?;
    Ok(ids.len())
}

/// Deletes `paths` now, logging (not failing on) what cannot be deleted: for files no
/// reader can have seen (written by a commit that failed).
pub async fn delete_quietly(store: &Arc<dyn object_store::ObjectStore>, paths: Vec<String>) {
    for path in paths {
        if let Err(e) = store.delete(&Path::from(path.as_str())).await
            && !matches!(e, object_store::Error::NotFound { .. })
        {
            tracing::warn!(%path, error = %e, "could not delete a file");
        }
    }
}

/// The files waiting for deletion, as `(store URL, object path)`: crawls leave them out.
///
/// # Errors
/// When the catalog cannot be read.
pub async fn pending(catalog: &Catalog) -> Result<HashSet<(String, String)>> {
    let mut out = HashSet::new();
    for (location, path) in catalog.pending_deletes().await? {
        if let Ok(location) = Location::parse_catalogued(&location) {
            out.insert((location.store_url().as_str().to_string(), path));
        }
    }
    Ok(out)
}
