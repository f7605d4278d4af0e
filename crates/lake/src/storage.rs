//! Object stores from locations: plain paths, `file://`, `s3://`, `gs://`, `az://` and
//! `memory://` URLs.
//!
//! A location is normalised once, when it enters Tarn (a crawl argument), into a URL with a
//! trailing slash; the catalog stores that URL, and the engine and crawler both get their
//! store through [`StoreRegistry`], so a table always reads through the store it was
//! crawled with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::execution::object_store::ObjectStoreUrl;
use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
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
            "s3" | "gs" | "az" | "memory" => {}
            other => {
                return Err(invalid(&format!(
                    "unsupported scheme '{other}'; use a local path, file://, s3://, gs:// or \
                     az://"
                )));
            }
        }
        let scheme = url.scheme();
        if matches!(scheme, "s3" | "gs" | "az") && url.host_str().unwrap_or("").is_empty() {
            let what = if scheme == "az" {
                "container"
            } else {
                "bucket"
            };
            return Err(invalid(&format!(
                "an {scheme}:// location needs a {what}: {scheme}://{what}/prefix"
            )));
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

/// DataFusion's object store registry over a [`StoreRegistry`]: a store root nobody
/// registered is built from the environment on first use. A worker of a distributed query
/// has no catalog to register its stores from; it reads what the coordinator's plan names.
#[derive(Debug)]
pub struct OnDemandStores {
    stores: Arc<StoreRegistry>,
    registered: datafusion::execution::object_store::DefaultObjectStoreRegistry,
}

impl OnDemandStores {
    /// Stores from `stores`.
    pub fn new(stores: Arc<StoreRegistry>) -> Self {
        Self {
            stores,
            registered: Default::default(),
        }
    }
}

impl datafusion::execution::object_store::ObjectStoreRegistry for OnDemandStores {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.registered.register_store(url, store)
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        if let Ok(store) = self.registered.get_store(url) {
            return Ok(store);
        }
        let location = Location::parse(url.as_str())
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        self.stores
            .store_for(&location)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
    }
}

/// Builds object stores on demand and keeps one per store root.
///
/// S3 stores read the standard AWS environment (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, ...).
#[derive(Debug, Default)]
pub struct StoreRegistry {
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
    /// Roots whose store was registered in code rather than built from the environment.
    registered: Mutex<std::collections::HashSet<String>>,
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
        self.registered
            .lock()
            .map_err(|_| Error::Internal("store registry lock poisoned".into()))?
            .insert(key.clone());
        self.stores
            .lock()
            .map_err(|_| Error::Internal("store registry lock poisoned".into()))?
            .insert(key, store);
        Ok(())
    }

    /// Whether `location` is on local disk and read through Tarn's own local store (not a
    /// store registered in its place), so its files may be read with plain file I/O.
    pub fn is_plain_local(&self, location: &Location) -> bool {
        location.url.scheme() == "file"
            && self
                .registered
                .lock()
                .is_ok_and(|r| !r.contains(location.store_url().as_str()))
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
                // A named profile fills what the environment leaves unset, as AWS tools do.
                let profile = aws_profile();
                let unset = |key: &str| std::env::var(key).is_err();
                for (key, env, config) in [
                    (
                        "aws_access_key_id",
                        "AWS_ACCESS_KEY_ID",
                        AmazonS3ConfigKey::AccessKeyId,
                    ),
                    (
                        "aws_secret_access_key",
                        "AWS_SECRET_ACCESS_KEY",
                        AmazonS3ConfigKey::SecretAccessKey,
                    ),
                    (
                        "aws_session_token",
                        "AWS_SESSION_TOKEN",
                        AmazonS3ConfigKey::Token,
                    ),
                    ("region", "AWS_REGION", AmazonS3ConfigKey::Region),
                ] {
                    if let Some(value) = profile.get(key)
                        && unset(env)
                    {
                        builder = builder.with_config(config, value);
                    }
                }
                let endpoint = std::env::var("AWS_ENDPOINT_URL")
                    .ok()
                    .or_else(|| profile.get("endpoint_url").cloned());
                if let Some(endpoint) = endpoint {
                    let plain_http = endpoint.starts_with("http://");
                    let virtual_hosted = builder
                        .get_config_value(&AmazonS3ConfigKey::VirtualHostedStyleRequest)
                        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
                    let endpoint = if virtual_hosted {
                        bucket_endpoint(&endpoint, bucket)
                    } else {
                        endpoint
                    };
                    builder = builder.with_endpoint(endpoint).with_allow_http(plain_http);
                }
                Arc::new(builder.build().map_err(|e| Error::InvalidLocation {
                    location: location.to_string(),
                    reason: format!("cannot configure S3: {e}"),
                })?)
            }
            "gs" => {
                let bucket = location.url.host_str().unwrap_or_default();
                let builder = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
                Arc::new(builder.build().map_err(|e| Error::InvalidLocation {
                    location: location.to_string(),
                    reason: format!(
                        "cannot configure Google Cloud Storage: {e}; set \
                         GOOGLE_SERVICE_ACCOUNT (a key file) or run where application default \
                         credentials are available"
                    ),
                })?)
            }
            "az" => {
                let container = location.url.host_str().unwrap_or_default();
                let builder = MicrosoftAzureBuilder::from_env().with_container_name(container);
                Arc::new(builder.build().map_err(|e| Error::InvalidLocation {
                    location: location.to_string(),
                    reason: format!(
                        "cannot configure Azure Blob Storage: {e}; set \
                         AZURE_STORAGE_ACCOUNT_NAME and a key, SAS token or service principal"
                    ),
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

/// The endpoint of `bucket` under virtual-hosted addressing: the bucket goes in front of the
/// service's host name (`https://s3.example.com` → `https://lake.s3.example.com`), as AWS's own
/// SDKs do. object_store takes a virtual-hosted endpoint as the bucket's own, so one service
/// endpoint would otherwise serve only one bucket. An endpoint that already names the
/// bucket is kept.
fn bucket_endpoint(endpoint: &str, bucket: &str) -> String {
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        return endpoint.to_string();
    };
    if rest.starts_with(&format!("{bucket}.")) {
        return endpoint.to_string();
    }
    format!("{scheme}://{bucket}.{rest}")
}

/// The settings of the AWS profile in use (`AWS_PROFILE`, else `default`) from the shared
/// credentials and config files (`AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE`, by
/// default under `~/.aws/`): keys, session token, region and `endpoint_url`. Credentials
/// win over config for a key both name.
pub(crate) fn aws_profile() -> HashMap<String, String> {
    let name = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".to_string());
    let home = std::env::var("HOME").unwrap_or_default();
    let file = |env: &str, default: &str| {
        std::env::var(env).unwrap_or_else(|_| format!("{home}/.aws/{default}"))
    };
    let mut settings = HashMap::new();
    // In the config file a profile other than `default` is `[profile name]`.
    let config_section = if name == "default" {
        name.clone()
    } else {
        format!("profile {name}")
    };
    for (path, section) in [
        (file("AWS_CONFIG_FILE", "config"), config_section),
        (file("AWS_SHARED_CREDENTIALS_FILE", "credentials"), name),
    ] {
        if let Ok(text) = std::fs::read_to_string(&path) {
            settings.extend(ini_section(&text, &section));
        }
    }
    settings
}

/// The `key = value` lines of `[section]` in an INI text.
fn ini_section(text: &str, section: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
            continue;
        }
        if inside && let Some((key, value)) = line.split_once('=') {
            out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_hosted_endpoints_name_the_bucket() {
        assert_eq!(
            bucket_endpoint("https://s3.example.com", "lake"),
            "https://lake.s3.example.com"
        );
        assert_eq!(
            bucket_endpoint("http://s3.local:9000/", "lake"),
            "http://lake.s3.local:9000/"
        );
        assert_eq!(
            bucket_endpoint("https://lake.s3.example.com", "lake"),
            "https://lake.s3.example.com"
        );
    }

    #[test]
    fn aws_profiles_are_read_from_their_sections() {
        let config = "[default]\nregion = eu-west-1\n\n[profile lake]\nregion = us-east-2\n\
                      endpoint_url = http://127.0.0.1:9000\n# comment\n[profile other]\nregion=x\n";
        let lake = ini_section(config, "profile lake");
        assert_eq!(lake.get("region").map(String::as_str), Some("us-east-2"));
        assert_eq!(
            lake.get("endpoint_url").map(String::as_str),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(
            ini_section(config, "default")
                .get("region")
                .map(String::as_str),
            Some("eu-west-1")
        );
        assert!(ini_section(config, "missing").is_empty());
    }

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
