//! Object stores from locations: plain paths, `file://`, `s3://` and `memory://` URLs.
//!
//! A location is normalised once, when it enters Tarn (a crawl argument), into a URL with a
//! trailing slash; the catalog stores that URL, and the engine and crawler both get their
//! store through [`StoreRegistry`], so a table always reads through the store it was
//! crawled with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::execution::object_store::ObjectStoreUrl;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use url::Url;

use crate::error::{Error, Result};

/// A location in a lake: the store it lives in and the prefix inside that store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Normalised URL, always ending in `/` (e.g. `file:///data/lake/`, `s3://bucket/events/`).
    pub url: Url,
}

impl Location {
    /// Parses a user-supplied location: a URL (`file://`, `s3://`, `memory://`) or a local
    /// path (relative paths are resolved against the current directory).
    ///
    /// # Errors
    /// [`Error::InvalidLocation`] for an unsupported scheme, a relative path that cannot be
    /// resolved, or a local path that does not exist.
    pub fn parse(input: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidLocation {
            location: input.to_string(),
            reason: reason.to_string(),
        };
        let mut url = match Url::parse(input) {
            Ok(url) if url.scheme().len() > 1 => url,
            // No scheme (or a Windows drive letter): a local path.
            _ => {
                let path = std::path::Path::new(input);
                let abs = std::fs::canonicalize(path).map_err(|e| {
                    invalid(&format!(
                        "{e}; give an existing directory, or a URL such as s3://bucket/prefix"
                    ))
                })?;
                Url::from_directory_path(&abs)
                    .map_err(|_| invalid("not an absolute directory path"))?
            }
        };
        match url.scheme() {
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|_| invalid("not a valid file URL"))?;
                if !path.exists() {
                    return Err(invalid("no such directory"));
                }
            }
            "s3" | "memory" => {}
            other => {
                return Err(invalid(&format!(
                    "unsupported scheme '{other}'; use a local path, file://, or s3://"
                )));
            }
        }
        if url.scheme() == "s3" && url.host_str().unwrap_or("").is_empty() {
            return Err(invalid(
                "an s3:// location needs a bucket: s3://bucket/prefix",
            ));
        }
        if !url.path().ends_with('/') {
            let p = format!("{}/", url.path());
            url.set_path(&p);
        }
        Ok(Self { url })
    }

    /// Parses a location the catalog recorded (already normalised): no existence check,
    /// so a table whose folder is gone still plans (and reads nothing).
    ///
    /// # Errors
    /// [`Error::CatalogCorrupt`] when the stored text is not a URL.
    pub fn parse_catalogued(stored: &str) -> Result<Self> {
        Url::parse(stored)
            .map(|url| Self { url })
            .map_err(|e| Error::CatalogCorrupt {
                what: format!("location '{stored}'"),
                reason: e.to_string(),
            })
    }

    /// The store's root URL (`file:///`, `s3://bucket/`), as DataFusion registers stores.
    pub fn store_url(&self) -> ObjectStoreUrl {
        let root = match self.url.scheme() {
            "file" => "file:///".to_string(),
            scheme => format!("{scheme}://{}/", self.url.host_str().unwrap_or("")),
        };
        // The scheme and host come from a URL that already parsed, so this cannot fail;
        // fall back to the local store rather than panic.
        ObjectStoreUrl::parse(root).unwrap_or_else(|_| ObjectStoreUrl::local_filesystem())
    }

    /// The prefix inside the store (no leading or trailing slash).
    pub fn prefix(&self) -> Path {
        let decoded = percent_encoding::percent_decode_str(self.url.path())
            .decode_utf8_lossy()
            .to_string();
        Path::from(decoded.trim_matches('/'))
    }

    /// The location of a child prefix, as a URL string ending in `/`.
    pub fn child_url(&self, store_path: &Path) -> String {
        let root = self.store_url();
        format!("{}{}/", root.as_str(), store_path.as_ref())
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.url.as_str())
    }
}

/// Builds object stores on demand and keeps one per store root.
///
/// S3 stores read the standard AWS environment (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, ...).
#[derive(Debug, Default)]
pub struct StoreRegistry {
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl StoreRegistry {
    /// Uses `store` for every location under `store_url` (e.g. `file:///` or
    /// `s3://bucket/`), instead of one built from the environment: for embedding Tarn
    /// with a store configured in code, and for instrumented stores in tests.
    ///
    /// # Errors
    /// [`Error::InvalidLocation`] when `store_url` is not a store root URL.
    pub fn register(&self, store_url: &str, store: Arc<dyn ObjectStore>) -> Result<()> {
        let url = url::Url::parse(store_url).map_err(|e| Error::InvalidLocation {
            location: store_url.to_string(),
            reason: e.to_string(),
        })?;
        let key = format!("{}://{}/", url.scheme(), url.host_str().unwrap_or_default());
        self.stores
            .lock()
            .map_err(|_| Error::Internal("store registry lock poisoned".into()))?
            .insert(key, store);
        Ok(())
    }

    /// Returns the store for a location, creating it on first use.
    ///
    /// # Errors
    /// [`Error::InvalidLocation`] when the store cannot be configured (e.g. bad S3 settings).
    pub fn store_for(&self, location: &Location) -> Result<Arc<dyn ObjectStore>> {
        let key = location.store_url().as_str().to_string();
        let mut stores = self
            .stores
            .lock()
            .map_err(|_| Error::Internal("store registry lock poisoned".into()))?;
        if let Some(store) = stores.get(&key) {
            return Ok(Arc::clone(store));
        }
        let store: Arc<dyn ObjectStore> = match location.url.scheme() {
            "file" => Arc::new(LocalFileSystem::new()),
            "memory" => Arc::new(InMemory::new()),
            "s3" => {
                let bucket = location.url.host_str().unwrap_or_default();
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
                    let plain_http = endpoint.starts_with("http://");
                    builder = builder.with_endpoint(endpoint).with_allow_http(plain_http);
                }
                Arc::new(builder.build().map_err(|e| Error::InvalidLocation {
                    location: location.to_string(),
                    reason: format!("cannot configure S3: {e}"),
                })?)
            }
            other => {
                return Err(Error::InvalidLocation {
                    location: location.to_string(),
                    reason: format!("unsupported scheme '{other}'"),
                });
            }
        };
        stores.insert(key, Arc::clone(&store));
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_path_becomes_file_url_with_trailing_slash() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::parse(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(loc.url.scheme(), "file");
        assert!(loc.url.path().ends_with('/'));
        assert_eq!(loc.store_url().as_str(), "file:///");
        assert_eq!(
            format!("/{}", loc.prefix()),
            std::fs::canonicalize(dir.path()).unwrap().to_str().unwrap()
        );
    }

    #[test]
    fn s3_location_keeps_bucket_and_prefix() {
        let loc = Location::parse("s3://bucket/events/raw").unwrap();
        assert_eq!(loc.store_url().as_str(), "s3://bucket/");
        assert_eq!(loc.prefix().as_ref(), "events/raw");
    }

    #[test]
    fn missing_directory_and_bad_scheme_are_clear_errors() {
        let err = Location::parse("/definitely/not/here")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/definitely/not/here"), "{err}");
        let err = Location::parse("ftp://host/x").unwrap_err().to_string();
        assert!(err.contains("unsupported scheme 'ftp'"), "{err}");
        let err = Location::parse("s3:///x").unwrap_err().to_string();
        assert!(err.contains("bucket"), "{err}");
    }
}
