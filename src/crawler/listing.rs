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
        let levels: Vec<object_store::ListResult> =
            futures::stream::iter(std::mem::take(&mut folders))
                .map(|folder| async move { store.list_with_delimiter(Some(&folder)).await })
                .buffer_unordered(IN_FLIGHT)
                .try_collect()
                .await?;
        for level in levels {
            objects.extend(level.objects);
            folders.extend(level.common_prefixes);
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
        keys.push("tx/not-under-t.parquet".to_string());
        for key in &keys {
            store
                .put(&Path::from(key.as_str()), PutPayload::from_static(b"x"))
                .await
                .expect("put");
        }
        for prefix in ["", "t", "u", "t/y=1", "missing"] {
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
