//! Where the workers are: a static list, a DNS name (one address per worker, as a
//! Kubernetes headless service gives) or a file of URLs, resolved again in the background;
//! a worker that does not accept a connection is left out until it does.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use datafusion::error::DataFusionError;
use datafusion_distributed::WorkerResolver;
use url::Url;

/// How often the list is resolved and the workers are tried again.
pub const REFRESH: Duration = Duration::from_secs(1);

/// How long a worker has to accept a connection before it is left out.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Where the workers are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerSource {
    /// These URLs (`http://host:port`).
    Static(Vec<Url>),
    /// Every address `host` resolves to, on `port`.
    Dns { host: String, port: u16 },
    /// The URLs in a file, one a line (`#` starts a comment), read again on each refresh.
    File(PathBuf),
}

impl WorkerSource {
    /// Parses `--workers`: `dns:host:port`, `file:path`, or URLs separated by commas.
    ///
    /// # Errors
    /// A message naming what is malformed.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(rest) = text.strip_prefix("dns:") {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("'{text}': write dns:HOST:PORT"))?;
            let port = port
                .parse()
                .map_err(|_| format!("'{text}': the port '{port}' is not a number"))?;
            return Ok(Self::Dns {
                host: host.to_string(),
                port,
            });
        }
        if let Some(path) = text.strip_prefix("file:") {
            return Ok(Self::File(PathBuf::from(path)));
        }
        let urls = text
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(worker_url)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::Static(urls))
    }

    /// The workers' URLs as the source names them now.
    async fn resolve(&self) -> Result<Vec<Url>, String> {
        match self {
            Self::Static(urls) => Ok(urls.clone()),
            Self::Dns { host, port } => {
                let found = tokio::net::lookup_host((host.as_str(), *port))
                    .await
                    .map_err(|e| format!("cannot resolve workers' name {host}: {e}"))?;
                found
                    .map(|addr: SocketAddr| worker_url(&addr.to_string()))
                    .collect()
            }
            Self::File(path) => {
                let text = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| format!("cannot read workers' file {}: {e}", path.display()))?;
                text.lines()
                    .map(|l| l.split('#').next().unwrap_or_default().trim())
                    .filter(|l| !l.is_empty())
                    .map(worker_url)
                    .collect()
            }
        }
    }
}

/// `text` as a worker's URL; `host:port` means `http://host:port`.
fn worker_url(text: &str) -> Result<Url, String> {
    let full = if text.contains("://") {
        text.to_string()
    } else {
        format!("http://{text}")
    };
    let url = Url::parse(&full).map_err(|e| format!("worker address '{text}': {e}"))?;
    if url.port_or_known_default().is_none() || url.host_str().is_none() {
        return Err(format!("worker address '{text}': write host:port"));
    }
    Ok(url)
}

/// The workers that answered at the last refresh: what distributed plans are spread over.
#[derive(Debug, Clone, Default)]
pub struct WorkerList {
    live: Arc<RwLock<Vec<Url>>>,
}

impl WorkerList {
    /// The list's workers now.
    pub fn urls(&self) -> Vec<Url> {
        self.live.read().map(|l| l.clone()).unwrap_or_default()
    }

    /// Resolves `source` and tries every worker now, then again every [`REFRESH`] for as
    /// long as the list is in use (the task ends when the last clone is dropped).
    pub async fn watch(source: WorkerSource) -> WorkerList {
        let list = WorkerList::default();
        list.refresh(&source).await;
        let weak = Arc::downgrade(&list.live);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(REFRESH);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(live) = weak.upgrade() else { return };
                WorkerList { live }.refresh(&source).await;
            }
        });
        list
    }

    async fn refresh(&self, source: &WorkerSource) {
        let candidates = match source.resolve().await {
            Ok(urls) => urls,
            Err(e) => {
                tracing::warn!(error = %e, "keeping the last list of workers");
                return;
            }
        };
        let mut answered = Vec::new();
        for url in candidates {
            if accepts(&url).await {
                answered.push(url);
            }
        }
        answered.sort();
        answered.dedup();
        let Ok(mut live) = self.live.write() else {
            return;
        };
        for gone in live.iter().filter(|u| !answered.contains(u)) {
            tracing::warn!(worker = %gone, "worker left out of distributed plans: it does not answer");
        }
        for back in answered.iter().filter(|u| !live.contains(u)) {
            tracing::info!(worker = %back, "worker joins distributed plans");
        }
        *live = answered;
    }
}

/// Whether `url`'s worker accepts a connection.
async fn accepts(url: &Url) -> bool {
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    matches!(
        tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((host, port))
        )
        .await,
        Ok(Ok(_))
    )
}

impl WorkerResolver for WorkerList {
    fn get_urls(&self) -> Result<Vec<Url>, DataFusionError> {
        Ok(self.urls())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert_eq!(
            WorkerSource::parse("a:1, http://b:2").unwrap(),
            WorkerSource::Static(vec![
                Url::parse("http://a:1").unwrap(),
                Url::parse("http://b:2").unwrap()
            ])
        );
        assert_eq!(
            WorkerSource::parse("dns:workers.tarn:7000").unwrap(),
            WorkerSource::Dns {
                host: "workers.tarn".into(),
                port: 7000
            }
        );
        assert!(
            WorkerSource::parse("dns:workers")
                .unwrap_err()
                .contains("dns:HOST:PORT")
        );
        assert!(
            WorkerSource::parse("dns:w:x")
                .unwrap_err()
                .contains("not a number")
        );
    }

    #[tokio::test]
    async fn a_worker_that_does_not_answer_is_left_out_until_it_does() {
        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let dir = std::env::temp_dir().join(format!("tarn-workers-{}", std::process::id()));
        std::fs::write(
            &dir,
            format!(
                "# the cluster\n{}\n{closed_addr}  # down\n",
                open.local_addr().unwrap()
            ),
        )
        .unwrap();
        let source = WorkerSource::File(dir.clone());
        let list = WorkerList::default();
        list.refresh(&source).await;
        let up = Url::parse(&format!("http://{}", open.local_addr().unwrap())).unwrap();
        assert_eq!(list.urls(), vec![up.clone()]);
        let reopened = tokio::net::TcpListener::bind(closed_addr).await.unwrap();
        list.refresh(&source).await;
        assert_eq!(list.urls().len(), 2);
        drop(open);
        list.refresh(&source).await;
        assert_eq!(
            list.urls(),
            vec![Url::parse(&format!("http://{closed_addr}")).unwrap()]
        );
        drop(reopened);
        std::fs::remove_file(dir).unwrap();
    }
}
