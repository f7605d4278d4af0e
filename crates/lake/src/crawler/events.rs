//! Event mode, like Glue's: a crawler reads S3 event notifications from an SQS queue and
//! re-crawls only the tables whose objects they name. An empty queue costs one request
//! and no listing.
//!
//! SQS is spoken directly (its JSON protocol: two calls, `ReceiveMessage` and
//! `DeleteMessageBatch`), signed with object_store's SigV4 signer and sent through its
//! HTTP client, so no AWS SDK joins the build. Credentials and region come from the same
//! environment and profile as S3 locations.

use object_store::ClientOptions;
use object_store::aws::{AwsAuthorizer, AwsCredential};
use object_store::client::{HttpClient, HttpConnector, HttpRequest, ReqwestConnector};
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// Messages taken per receive call (SQS's maximum).
const BATCH: usize = 10;
/// How long received messages stay hidden from other readers while the crawl runs.
const VISIBILITY_SECS: u64 = 600;

/// One SQS queue of S3 event notifications.
#[derive(Debug)]
pub struct Queue {
    url: String,
    endpoint: String,
    region: String,
    credential: AwsCredential,
    client: HttpClient,
}

/// A received message: its receipt (to delete it) and the objects it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub receipt: String,
    /// `(bucket, key)` of each object the notification names.
    pub objects: Vec<(String, String)>,
}

impl Queue {
    /// The queue at `url` (`https://sqs.<region>.amazonaws.com/<account>/<name>`, or a
    /// compatible server's), with credentials from the AWS environment or profile.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a URL that is not a queue URL or missing credentials.
    pub fn new(url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url).map_err(|e| {
            Error::InvalidArgument(format!("events queue '{url}' is not a URL: {e}"))
        })?;
        let host = parsed.host_str().unwrap_or_default();
        if host.is_empty() || parsed.path().trim_matches('/').is_empty() {
            return Err(Error::InvalidArgument(format!(
                "events queue '{url}' is not an SQS queue URL \
                 (https://sqs.<region>.amazonaws.com/<account>/<queue>)"
            )));
        }
        let endpoint = format!(
            "{}://{}/",
            parsed.scheme(),
            &parsed[url::Position::BeforeHost..url::Position::AfterPort]
        );
        let setting = |env: &str, profile_key: &str| {
            std::env::var(env)
                .ok()
                .or_else(|| crate::storage::aws_profile().get(profile_key).cloned())
        };
        let region = setting("AWS_REGION", "region")
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            // The region is in AWS's own queue host names.
            .or_else(|| host.split('.').nth(1).map(str::to_string))
            .unwrap_or_else(|| "us-east-1".to_string());
        let (Some(key_id), Some(secret_key)) = (
            setting("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
            setting("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
        ) else {
            return Err(Error::InvalidArgument(format!(
                "no AWS credentials to read the events queue '{url}': set AWS_ACCESS_KEY_ID \
                 and AWS_SECRET_ACCESS_KEY, or a profile with AWS_PROFILE"
            )));
        };
        let credential = AwsCredential {
            key_id,
            secret_key,
            token: setting("AWS_SESSION_TOKEN", "aws_session_token"),
        };
        let client = ReqwestConnector::default()
            .connect(&ClientOptions::new().with_allow_http(parsed.scheme() == "http"))
            .map_err(|e| Error::InvalidArgument(format!("events queue '{url}': {e}")))?;
        Ok(Self {
            url: url.to_string(),
            endpoint,
            region,
            credential,
            client,
        })
    }

    /// One SQS call (`target` is the action, e.g. `ReceiveMessage`).
    async fn call(&self, target: &str, body: Value) -> Result<Value> {
        let failed = |what: String| Error::Execution(format!("events queue {}: {what}", self.url));
        let mut request: HttpRequest = http::Request::builder()
            .method("POST")
            .uri(&self.endpoint)
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amz-target", format!("AmazonSQS.{target}"))
            .body(body.to_string().into())
            .map_err(|e| failed(e.to_string()))?;
        AwsAuthorizer::new(&self.credential, "sqs", &self.region).authorize(&mut request, None);
        // No answer at all: the queue's service is unreachable, which may pass.
        let response = self.client.execute(request).await.map_err(|e| {
            Error::Unavailable(format!(
                "events queue {}: {target} got no answer: {e}",
                self.url
            ))
        })?;
        let status = response.status();
        let bytes = response
            .into_body()
            .bytes()
            .await
            .map_err(|e| failed(format!("{target} failed: {e}")))?;
        if !status.is_success() {
            return Err(failed(format!(
                "{target} answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            )));
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| failed(format!("{target} answer: {e}")))
    }

    /// Takes up to `max` messages, stopping early when the queue is empty. They stay hidden
    /// from other readers for ten minutes, and come back unless [`Queue::delete`]d.
    ///
    /// # Errors
    /// [`Error::Execution`] when SQS refuses, [`Error::Unavailable`] when it cannot be
    /// reached.
    pub async fn receive(&self, max: usize) -> Result<Vec<Message>> {
        let mut out = Vec::new();
        while out.len() < max {
            let answer = self
                .call(
                    "ReceiveMessage",
                    json!({
                        "QueueUrl": self.url,
                        "MaxNumberOfMessages": BATCH.min(max - out.len()),
                        "VisibilityTimeout": VISIBILITY_SECS,
                        "WaitTimeSeconds": 0,
                    }),
                )
                .await?;
            let messages = answer["Messages"].as_array().cloned().unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            for m in messages {
                out.push(Message {
                    receipt: m["ReceiptHandle"].as_str().unwrap_or_default().to_string(),
                    objects: s3_objects(m["Body"].as_str().unwrap_or_default()),
                });
            }
        }
        Ok(out)
    }

    /// Deletes handled messages.
    ///
    /// # Errors
    /// [`Error::Execution`] when SQS refuses, [`Error::Unavailable`] when it cannot be
    /// reached.
    pub async fn delete(&self, messages: &[Message]) -> Result<()> {
        self.each_batch("DeleteMessageBatch", messages, Value::Null)
            .await
    }

    /// Makes messages visible again at once, for the next run to take them again.
    ///
    /// # Errors
    /// [`Error::Execution`] when SQS refuses, [`Error::Unavailable`] when it cannot be
    /// reached.
    pub async fn release(&self, messages: &[Message]) -> Result<()> {
        self.each_batch("ChangeMessageVisibilityBatch", messages, json!(0))
            .await
    }

    /// Calls a batch action on messages, ten at a time (`visibility`, unless null, goes
    /// with each entry).
    async fn each_batch(
        &self,
        target: &str,
        messages: &[Message],
        visibility: Value,
    ) -> Result<()> {
        for chunk in messages.chunks(BATCH) {
            let entries: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let mut entry = json!({"Id": i.to_string(), "ReceiptHandle": m.receipt});
                    if !visibility.is_null() {
                        entry["VisibilityTimeout"] = visibility.clone();
                    }
                    entry
                })
                .collect();
            self.call(target, json!({"QueueUrl": self.url, "Entries": entries}))
                .await?;
        }
        Ok(())
    }
}

/// The `(bucket, key)` pairs an S3 event notification names: plain, or wrapped in an SNS
/// notification. Test events and other messages name none.
pub fn s3_objects(body: &str) -> Vec<(String, String)> {
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return Vec::new();
    };
    if let Some(inner) = value["Message"].as_str() {
        return s3_objects(inner);
    }
    value["Records"]
        .as_array()
        .map(|records| {
            records
                .iter()
                .filter_map(|r| {
                    let bucket = r["s3"]["bucket"]["name"].as_str()?;
                    let key = r["s3"]["object"]["key"].as_str()?;
                    // Keys come URL-encoded, with `+` for spaces.
                    let key = percent_encoding::percent_decode_str(&key.replace('+', " "))
                        .decode_utf8_lossy()
                        .to_string();
                    Some((bucket.to_string(), key))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_notifications_name_their_objects() {
        let body = r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"lake"},
            "object":{"key":"events/day%3D02/part+1.parquet","size":10}}}]}"#;
        assert_eq!(
            s3_objects(body),
            vec![(
                "lake".to_string(),
                "events/day=02/part 1.parquet".to_string()
            )]
        );
        let sns = serde_json::json!({"Type": "Notification", "Message": body}).to_string();
        assert_eq!(s3_objects(&sns).len(), 1);
        assert!(s3_objects(r#"{"Event":"s3:TestEvent","Bucket":"lake"}"#).is_empty());
        assert!(s3_objects("not json").is_empty());
    }
}
