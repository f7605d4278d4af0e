//! Listing a location with several requests in flight.
//!
//! One `list` call walks a prefix in sequence: on S3 a page of 1,000 keys per round trip,
//! on local disk one folder after another. A lake laid out in partition folders lists
//! faster split by folder: the first levels are listed with a delimiter (a few requests,
//! each naming the folders below) until there are enough folders to share out, and those
//! are then listed whole, several at once.

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};

/// Folders listed at once.
const IN_FLIGHT: usize = 16;
/// Enough folders to share out among the requests in flight.
const ENOUGH_FOLDERS: usize = 2 * IN_FLIGHT;
/// Levels listed with a delimiter at most before the folders found are listed whole.
const MAX_LEVELS: usize = 3;
/// More folders than this on one level (years of daily partitions) would cost a request
/// each; the level above is then listed whole instead, a page per thousand objects.
const MAX_FOLDERS: usize = 256;

/// Every object under `prefix`, as one `list` would give them (in no particular order).
///
/// # Errors
/// The first listing request that fails.
pub async fn list_all(
    store: &dyn ObjectStore,
    prefix: &Path,
) -> object_store::Result<Vec<ObjectMeta>> {
    let mut objects: Vec<ObjectMeta> = Vec::new();
    let mut folders: Vec<Path> = vec![prefix.clone()];
    for _ in 0..MAX_LEVELS {
        if folders.len() >= ENOUGH_FOLDERS {
            break;
        }
        let levels: Vec<(Path, object_store::ListResult)> = futures::stream::iter(folders.clone())
            .map(|folder| async move {
                let level = store.list_with_delimiter(Some(&folder)).await?;
                Ok::<_, object_store::Error>((folder, level))
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect()
            .await?;
        let below: usize = levels.iter().map(|(_, l)| l.common_prefixes.len()).sum();
        if below > MAX_FOLDERS {
            break;
        }
        folders.clear();
        for (folder, level) in levels {
            objects.extend(level.objects);
            // Only folders strictly below the one listed: a key starting with `/` shows
            // up as the folder `/`, which is the empty path again.
            folders.extend(
                level
                    .common_prefixes
                    .into_iter()
                    .filter(|p| p.as_ref().len() > folder.as_ref().len()),
            );
        }
        if folders.is_empty() {
            return Ok(objects);
        }
    }
    let below: Vec<Vec<ObjectMeta>> = futures::stream::iter(folders)
        .map(|folder| async move { store.list(Some(&folder)).try_collect::<Vec<_>>().await })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await?;
    objects.extend(below.into_iter().flatten());
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};

    #[tokio::test]
    async fn lists_what_one_list_call_lists() {
        let store = InMemory::new();
        let mut keys = vec!["top.parquet".to_string(), "t/_SUCCESS".to_string()];
        for y in 0..3 {
            keys.push(format!("t/y={y}/side.json"));
            for m in 0..14 {
                for f in 0..2 {
                    keys.push(format!("t/y={y}/m={m}/part-{f}.parquet"));
                }
            }
        }
        keys.push("u/deep/a/b/c/d/e.parquet".to_string());
        for d in 0..300 {
            keys.push(format!("w/dt={d:03}/part-0.parquet"));
        }
        keys.push("tx/not-under-t.parquet".to_string());
        for key in &keys {
            store
                .put(&Path::from(key.as_str()), PutPayload::from_static(b"x"))
                .await
                .expect("put");
        }
        for prefix in ["", "t", "u", "w", "t/y=1", "missing"] {
            let prefix = Path::from(prefix);
            let mut expected: Vec<String> = store
                .list(Some(&prefix))
                .map_ok(|m| m.location.to_string())
                .try_collect()
                .await
                .expect("list");
            let mut listed: Vec<String> = list_all(&store, &prefix)
                .await
                .expect("list_all")
                .into_iter()
                .map(|m| m.location.to_string())
                .collect();
            expected.sort();
            listed.sort();
            assert_eq!(listed, expected, "under {prefix}");
        }
    }
}
