//! Calls between coordinator and workers.
//!
//! - The cluster's shared secret: the coordinator (and a worker calling another) sends it
//!   as a bearer token; a worker refuses a call without it. The worker service runs any
//!   plan it is sent with the process's access to the lake, so it must never be open to
//!   clients.
//! - A worker that cannot be reached or is lost mid-query is named in the query's error,
//!   as [`tarn_lake::Error::Unavailable`] (the query may be run again; the worker list
//!   leaves the worker out once it stops answering).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion_distributed::grpc::{BoxCloneSyncChannel, DefaultChannelResolver};
use datafusion_distributed::{
    ChannelResolver, CoordinatorToWorkerMsg, ExecuteTaskRequest, GetWorkerInfoRequest,
    GetWorkerInfoResponse, SetPlanRequest, WorkerChannel, WorkerToCoordinatorMsg,
};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use url::Url;

/// Channels to workers that carry the cluster's token.
#[derive(Clone, Default)]
pub struct TokenChannels {
    channels: DefaultChannelResolver,
    header: Option<Arc<http::HeaderValue>>,
}

impl TokenChannels {
    /// Channels sending `token` (none: no `authorization` header).
    pub fn new(token: Option<String>) -> Self {
        let header = token
            .and_then(|t| http::HeaderValue::from_str(&format!("Bearer {t}")).ok())
            .map(|mut v| {
                v.set_sensitive(true);
                Arc::new(v)
            });
        Self {
            channels: DefaultChannelResolver::default(),
            header,
        }
    }
}

#[async_trait]
impl ChannelResolver for TokenChannels {
    async fn get_worker_client_for_url(
        &self,
        url: &Url,
    ) -> Result<Box<dyn WorkerChannel>, DataFusionError> {
        let channel = self
            .channels
            .get_channel(url)
            .await
            .map_err(|e| lost(url, &format!("cannot reach it ({})", innermost(&e))))?;
        let channel = match &self.header {
            Some(header) => {
                let header = Arc::clone(header);
                BoxCloneSyncChannel::new(
                    tower::ServiceBuilder::new()
                        .map_request(move |mut request: http::Request<tonic::body::Body>| {
                            request
                                .headers_mut()
                                .insert(http::header::AUTHORIZATION, header.as_ref().clone());
                            request
                        })
                        .service(channel),
                )
            }
            None => channel,
        };
        Ok(Box::new(NamedWorker {
            url: url.clone(),
            inner: datafusion_distributed::grpc::create_worker_client(channel),
        }))
    }
}

/// The message at the bottom of `e` (DataFusion wraps a connection error in context that
/// repeats it in debug form).
fn innermost(e: &DataFusionError) -> String {
    match e {
        DataFusionError::Context(_, inner) => innermost(inner),
        DataFusionError::Shared(inner) => innermost(inner),
        other => other.strip_backtrace().to_string(),
    }
}

/// The error of a query whose worker `url` failed: `what` happened.
fn lost(url: &Url, what: &str) -> DataFusionError {
    DataFusionError::External(Box::new(tarn_lake::Error::Unavailable(format!(
        "worker {url} {what}; the query was stopped and may be run again (the coordinator \
         leaves a worker out of new queries while it does not answer)"
    ))))
}

/// `e`, naming worker `url` where it is the transport's failure (a worker's own error,
/// rebuilt from its answer, passes unchanged).
fn named(url: &Url, e: DataFusionError) -> DataFusionError {
    match e {
        DataFusionError::External(inner) => match inner.downcast::<tonic::Status>() {
            Ok(status) => lost(
                url,
                &format!("was lost during the query ({})", status.message()),
            ),
            Err(other) => DataFusionError::External(other),
        },
        other => other,
    }
}

/// A worker's client whose transport errors name the worker.
struct NamedWorker {
    url: Url,
    inner: Box<dyn WorkerChannel>,
}

#[async_trait]
impl WorkerChannel for NamedWorker {
    async fn coordinator_channel(
        &mut self,
        headers: http::HeaderMap,
        set_plan_request: SetPlanRequest,
        c2w_stream: BoxStream<'static, CoordinatorToWorkerMsg>,
        metrics: ExecutionPlanMetricsSet,
        task_ctx: &Arc<TaskContext>,
    ) -> Result<BoxStream<'static, Result<WorkerToCoordinatorMsg, DataFusionError>>, DataFusionError>
    {
        let url = self.url.clone();
        let stream = self
            .inner
            .coordinator_channel(headers, set_plan_request, c2w_stream, metrics, task_ctx)
            .await
            .map_err(|e| named(&url, e))?;
        Ok(stream.map_err(move |e| named(&url, e)).boxed())
    }

    async fn execute_task(
        &mut self,
        headers: http::HeaderMap,
        request: ExecuteTaskRequest,
        metrics: ExecutionPlanMetricsSet,
        task_ctx: &Arc<TaskContext>,
    ) -> Result<Vec<BoxStream<'static, Result<RecordBatch, DataFusionError>>>, DataFusionError>
    {
        let streams = self
            .inner
            .execute_task(headers, request, metrics, task_ctx)
            .await
            .map_err(|e| named(&self.url, e))?;
        Ok(streams
            .into_iter()
            .map(|s| {
                let url = self.url.clone();
                s.map_err(move |e| named(&url, e)).boxed()
            })
            .collect())
    }

    async fn get_worker_info(
        &mut self,
        request: GetWorkerInfoRequest,
    ) -> Result<GetWorkerInfoResponse, DataFusionError> {
        let url = self.url.clone();
        self.inner
            .get_worker_info(request)
            .await
            .map_err(|e| named(&url, e))
    }
}

/// The worker's check of the token on every call.
#[derive(Clone)]
pub struct TokenCheck {
    /// SHA-256 of the expected `authorization` value (compared as digests, so the time a
    /// comparison takes says nothing about the token).
    expected: Option<[u8; 32]>,
}

impl TokenCheck {
    /// A check for `token` (none: every call passes).
    pub fn new(token: Option<&str>) -> Self {
        Self {
            expected: token.map(|t| Sha256::digest(format!("Bearer {t}").as_bytes()).into()),
        }
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .map(|v| <[u8; 32]>::from(Sha256::digest(v.as_bytes())));
        if given.as_ref() == Some(expected) {
            Ok(request)
        } else {
            Err(tonic::Status::unauthenticated(
                "this Tarn worker needs the cluster's token (--cluster-token on the coordinator \
                 and on every worker)",
            ))
        }
    }
}
