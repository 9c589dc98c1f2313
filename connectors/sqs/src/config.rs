//! The YAML shapes of the SQS source and destination, and the queue URL they
//! share.

use std::time::Duration;

use serde::Deserialize;
use switchyard_aws::ClientSettings;
use switchyard_sdk::ConnectorError;

/// Pollers when `max_concurrency` is left out: Lambda starts polling a queue
/// with five concurrent long polls.
pub const DEFAULT_MAX_CONCURRENCY: u16 = 5;
/// Lambda's `ScalingConfig.MaximumConcurrency` range.
pub const MAX_CONCURRENCY_RANGE: std::ops::RangeInclusive<u16> = 2..=1000;
/// SQS's longest long poll, and Lambda's.
pub const DEFAULT_WAIT_TIME: Duration = Duration::from_secs(20);
const MAX_WAIT_SECS: u64 = 20;
/// SQS refuses visibility timeouts above 12 hours.
pub const MAX_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(12 * 60 * 60);
/// Message group ids and deduplication ids hold at most 128 characters.
const MAX_ID_CHARS: usize = 128;
/// The message group of a FIFO destination's messages when none is configured.
pub const DEFAULT_MESSAGE_GROUP_ID: &str = "switchyard";

/// `{ sqs: { queue_url, endpoint_url, region, max_concurrency, wait_time,
/// visibility_timeout } }` as a source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsSourceConfig {
    /// `https://sqs.<region>.amazonaws.com/<account>/<queue>`, or the queue
    /// URL an SQS-compatible server (moto, LocalStack, ElasticMQ) hands out.
    pub queue_url: String,
    /// Overrides where requests go; `""` (what `${AWS_ENDPOINT_URL:-}` becomes
    /// when unset) means not set.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Overrides the region; `""` means not set.
    #[serde(default)]
    pub region: Option<String>,
    /// Concurrent long polls (2 to 1000, default 5).
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: u16,
    /// How long one receive waits for messages (`WaitTimeSeconds`), whole
    /// seconds from 0 to 20 (default 20 s).
    #[serde(default = "default_wait_time", with = "humantime_serde")]
    pub wait_time: Duration,
    /// How long a received message stays hidden from other consumers before
    /// the source extends it; whole seconds from 1 s to 12 h. Default: the
    /// queue's own `VisibilityTimeout`.
    #[serde(default, with = "humantime_serde")]
    pub visibility_timeout: Option<Duration>,
}

/// `{ sqs: { queue_url, endpoint_url, region, message_group_id } }` as a
/// destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsDestinationConfig {
    pub queue_url: String,
    #[serde(default)]
    pub endpoint_url: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// The `MessageGroupId` of every message: default `"switchyard"` for a
    /// FIFO queue; on a standard queue it is only sent when set.
    #[serde(default)]
    pub message_group_id: Option<String>,
}

fn default_max_concurrency() -> u16 {
    DEFAULT_MAX_CONCURRENCY
}

fn default_wait_time() -> Duration {
    DEFAULT_WAIT_TIME
}

/// The checked source settings.
#[derive(Debug, Clone)]
pub(crate) struct SourceSettings {
    pub(crate) queue: QueueUrl,
    pub(crate) client: ClientSettings,
    pub(crate) max_concurrency: u16,
    pub(crate) wait_seconds: i32,
    pub(crate) visibility_seconds: Option<i32>,
}

/// The checked destination settings.
#[derive(Debug, Clone)]
pub(crate) struct DestinationSettings {
    pub(crate) queue: QueueUrl,
    pub(crate) client: ClientSettings,
    pub(crate) message_group_id: Option<String>,
}

impl SqsSourceConfig {
    /// Checks what serde cannot, naming the key at fault.
    pub(crate) fn validate(&self) -> Result<SourceSettings, ConnectorError> {
        let queue = QueueUrl::parse("queue_url", &self.queue_url)?;
        let client = ClientSettings::parse(self.endpoint_url.as_deref(), self.region.as_deref())?;
        if !MAX_CONCURRENCY_RANGE.contains(&self.max_concurrency) {
            return Err(ConnectorError::Config(format!(
                "max_concurrency: expected {} to {}, got {}",
                MAX_CONCURRENCY_RANGE.start(),
                MAX_CONCURRENCY_RANGE.end(),
                self.max_concurrency
            )));
        }
        let wait = whole_seconds("wait_time", self.wait_time)?;
        if wait > MAX_WAIT_SECS {
            return Err(ConnectorError::Config(format!(
                "wait_time: expected 0s to {MAX_WAIT_SECS}s (SQS's longest long poll), got {}s",
                wait
            )));
        }
        let visibility = match self.visibility_timeout {
            None => None,
            Some(timeout) => {
                let seconds = whole_seconds("visibility_timeout", timeout)?;
                if seconds == 0 || timeout > MAX_VISIBILITY_TIMEOUT {
                    // 0 would hand every message to every poller at once.
                    return Err(ConnectorError::Config(format!(
                        "visibility_timeout: expected 1s to 12h, got {}",
                        humantime::format_duration(timeout)
                    )));
                }
                Some(seconds)
            }
        };
        Ok(SourceSettings {
            queue,
            client,
            max_concurrency: self.max_concurrency,
            // Both were checked against limits far below i32::MAX.
            wait_seconds: i32::try_from(wait).unwrap_or(i32::MAX),
            visibility_seconds: visibility.map(|s| i32::try_from(s).unwrap_or(i32::MAX)),
        })
    }
}

impl SqsDestinationConfig {
    pub(crate) fn validate(&self) -> Result<DestinationSettings, ConnectorError> {
        let queue = QueueUrl::parse("queue_url", &self.queue_url)?;
        let client = ClientSettings::parse(self.endpoint_url.as_deref(), self.region.as_deref())?;
        let configured = self.message_group_id.as_deref().filter(|id| !id.is_empty());
        if let Some(id) = configured {
            check_id("message_group_id", id)?;
        }
        let message_group_id = match configured {
            Some(id) => Some(id.to_string()),
            None if queue.fifo => Some(DEFAULT_MESSAGE_GROUP_ID.to_string()),
            None => None,
        };
        Ok(DestinationSettings { queue, client, message_group_id })
    }
}

/// A duration SQS takes in whole seconds.
fn whole_seconds(key: &str, duration: Duration) -> Result<u64, ConnectorError> {
    if duration.subsec_nanos() != 0 {
        return Err(ConnectorError::Config(format!(
            "{key}: SQS counts whole seconds, got {}",
            humantime::format_duration(duration)
        )));
    }
    Ok(duration.as_secs())
}

/// SQS's rule for group and deduplication ids: 1 to 128 characters of
/// alphanumerics and ASCII punctuation.
fn check_id(key: &str, id: &str) -> Result<(), ConnectorError> {
    let count = id.chars().count();
    if count > MAX_ID_CHARS {
        return Err(ConnectorError::Config(format!("{key}: at most {MAX_ID_CHARS} characters, got {count}")));
    }
    if let Some(bad) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || c.is_ascii_punctuation())) {
        return Err(ConnectorError::Config(format!(
            "{key}: only letters, digits and ASCII punctuation are allowed, got {bad:?}"
        )));
    }
    Ok(())
}

/// A queue URL and what it says about the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueueUrl {
    /// The URL as configured: SQS takes it as the queue's name.
    pub(crate) url: String,
    pub(crate) account: String,
    pub(crate) name: String,
    /// A `.fifo` name: SQS requires it of FIFO queues and refuses it otherwise.
    pub(crate) fifo: bool,
    /// The region in an AWS host name (`sqs.eu-west-1.amazonaws.com`).
    pub(crate) region: Option<String>,
    /// `scheme://host:port` of a server that is not AWS: requests go there
    /// unless an endpoint is configured, since the SDK would otherwise send
    /// them to AWS.
    pub(crate) origin: Option<String>,
}

impl QueueUrl {
    pub(crate) fn parse(key: &str, text: &str) -> Result<Self, ConnectorError> {
        let expected = "expected http(s)://host/<account id>/<queue name>";
        let url =
            url::Url::parse(text.trim()).map_err(|e| ConnectorError::Config(format!("{key}: {expected}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConnectorError::Config(format!("{key}: {expected}, got scheme {:?}", url.scheme())));
        }
        let Some(host) = url.host_str().map(str::to_ascii_lowercase) else {
            return Err(ConnectorError::Config(format!("{key}: {expected}, got no host")));
        };
        let segments: Vec<&str> = url.path().trim_matches('/').split('/').collect();
        let [account, name] = segments.as_slice() else {
            return Err(ConnectorError::Config(format!("{key}: {expected}, got path {:?}", url.path())));
        };
        if account.is_empty() || name.is_empty() {
            return Err(ConnectorError::Config(format!("{key}: {expected}, got path {:?}", url.path())));
        }
        let origin = (!is_aws_host(&host)).then(|| {
            let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
            let host = url.host_str().unwrap_or_default();
            format!("{}://{host}{port}", url.scheme())
        });
        Ok(Self {
            url: text.trim().to_string(),
            account: account.to_string(),
            name: name.to_string(),
            fifo: name.ends_with(".fifo"),
            region: region_of(&host),
            origin,
        })
    }

    /// `arn:aws:sqs:<region>:<account>:<name>`, Lambda's `eventSourceARN`.
    pub(crate) fn arn(&self, region: &str) -> String {
        let partition = if region.starts_with("cn-") { "aws-cn" } else { "aws" };
        format!("arn:{partition}:sqs:{region}:{}:{}", self.account, self.name)
    }
}

/// Whether `host` is one of AWS's (rather than moto, LocalStack, ElasticMQ).
pub(crate) fn is_aws_host(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    [".amazonaws.com", ".amazonaws.com.cn", ".api.aws"].iter().any(|suffix| host.ends_with(suffix))
}

/// The region named by an SQS host: `sqs.<region>.…` (AWS, LocalStack),
/// `<region>.queue.amazonaws.com`, or the legacy `queue.amazonaws.com`
/// (us-east-1).
fn region_of(host: &str) -> Option<String> {
    if host == "queue.amazonaws.com" {
        return Some("us-east-1".to_string());
    }
    let labels: Vec<&str> = host.split('.').collect();
    let candidate = match labels.as_slice() {
        ["sqs", region, _, ..] => region,
        [region, "queue", "amazonaws", "com"] => region,
        _ => return None,
    };
    looks_like_region(candidate).then(|| candidate.to_string())
}

/// `us-east-1`, `ap-southeast-2`, `us-gov-west-1`: letters, then dashes,
/// ending in a number.
fn looks_like_region(label: &str) -> bool {
    let parts: Vec<&str> = label.split('-').collect();
    parts.len() >= 3
        && parts.last().is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        && parts[..parts.len() - 1].iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn source(value: serde_json::Value) -> SqsSourceConfig {
        serde_json::from_value(value).expect("deserializes")
    }

    #[test]
    fn source_defaults() {
        let config = source(json!({"queue_url": "http://127.0.0.1:4566/000000000000/jobs"}));
        assert_eq!(config.max_concurrency, DEFAULT_MAX_CONCURRENCY);
        assert_eq!(config.wait_time, DEFAULT_WAIT_TIME);
        assert_eq!(config.visibility_timeout, None);
        let settings = config.validate().expect("valid");
        assert_eq!((settings.wait_seconds, settings.visibility_seconds), (20, None));
        assert_eq!(settings.queue.origin.as_deref(), Some("http://127.0.0.1:4566"));
        assert_eq!((settings.queue.account.as_str(), settings.queue.name.as_str()), ("000000000000", "jobs"));
        assert!(!settings.queue.fifo);
        assert_eq!(settings.client.endpoint_url, None);
    }

    #[test]
    fn durations_and_empty_strings() {
        let config = source(json!({
            "queue_url": "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs.fifo",
            "endpoint_url": "", "region": "",
            "wait_time": "5s", "visibility_timeout": "2m", "max_concurrency": 2
        }));
        let settings = config.validate().expect("valid");
        assert_eq!((settings.wait_seconds, settings.visibility_seconds), (5, Some(120)));
        assert_eq!(settings.client.endpoint_url, None, "an empty endpoint_url is not set");
        assert_eq!(settings.client.region, None, "an empty region is not set");
        assert!(settings.queue.fifo);
        assert_eq!(settings.queue.region.as_deref(), Some("eu-west-1"));
        assert_eq!(settings.queue.origin, None, "AWS hosts go through the SDK's endpoint resolution");
        assert_eq!(settings.queue.arn("eu-west-1"), "arn:aws:sqs:eu-west-1:123456789012:jobs.fifo");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_value::<SqsSourceConfig>(json!({"queue_url": "http://h/1/q", "batch_size": 10}))
            .expect_err("unknown field");
        assert!(err.to_string().contains("unknown field `batch_size`"), "{err}");
        let err = serde_json::from_value::<SqsDestinationConfig>(json!({"queue_url": "http://h/1/q", "wait_time": 1}))
            .expect_err("unknown field");
        assert!(err.to_string().contains("unknown field `wait_time`"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_by_key() {
        let cases = [
            (json!({"queue_url": "not a url"}), "queue_url:"),
            (json!({"queue_url": "ftp://h/1/q"}), "queue_url:"),
            (json!({"queue_url": "http://h/q"}), "queue_url:"),
            (json!({"queue_url": "http://h/1/q/extra"}), "queue_url:"),
            (json!({"queue_url": "http://h/1/q", "endpoint_url": "localhost:4566"}), "endpoint_url:"),
            (json!({"queue_url": "http://h/1/q", "region": "us east"}), "region:"),
            (json!({"queue_url": "http://h/1/q", "max_concurrency": 1}), "max_concurrency: expected 2 to 1000"),
            (json!({"queue_url": "http://h/1/q", "max_concurrency": 1001}), "max_concurrency: expected 2 to 1000"),
            (json!({"queue_url": "http://h/1/q", "wait_time": "21s"}), "wait_time:"),
            (json!({"queue_url": "http://h/1/q", "wait_time": "1500ms"}), "wait_time:"),
            (json!({"queue_url": "http://h/1/q", "visibility_timeout": "0s"}), "visibility_timeout:"),
            (json!({"queue_url": "http://h/1/q", "visibility_timeout": "13h"}), "visibility_timeout:"),
        ];
        for (value, key) in cases {
            let err = source(value.clone()).validate().err().unwrap_or_else(|| panic!("accepted {value}"));
            assert!(err.to_string().contains(key), "{value}: {err}");
        }
    }

    #[test]
    fn regions_in_queue_hosts() {
        let region = |url: &str| QueueUrl::parse("queue_url", url).expect("valid").region;
        assert_eq!(region("https://sqs.us-east-2.amazonaws.com/1/q").as_deref(), Some("us-east-2"));
        assert_eq!(region("https://sqs.cn-north-1.amazonaws.com.cn/1/q").as_deref(), Some("cn-north-1"));
        assert_eq!(region("https://ap-south-1.queue.amazonaws.com/1/q").as_deref(), Some("ap-south-1"));
        assert_eq!(region("https://queue.amazonaws.com/1/q").as_deref(), Some("us-east-1"));
        assert_eq!(
            region("http://sqs.eu-central-1.localhost.localstack.cloud:4566/000000000000/q").as_deref(),
            Some("eu-central-1")
        );
        assert_eq!(region("http://127.0.0.1:4566/000000000000/q"), None);
        assert_eq!(region("http://sqs.local:9324/000000000000/q"), None);
        let china = QueueUrl::parse("queue_url", "https://sqs.cn-north-1.amazonaws.com.cn/1/q").expect("valid");
        assert_eq!(china.arn("cn-north-1"), "arn:aws-cn:sqs:cn-north-1:1:q");
    }

    #[test]
    fn aws_hosts() {
        assert!(is_aws_host("sqs.us-east-1.amazonaws.com"));
        assert!(is_aws_host("SQS.cn-north-1.amazonaws.com.cn"));
        assert!(is_aws_host("sqs.us-east-1.api.aws"));
        assert!(!is_aws_host("127.0.0.1"));
        assert!(!is_aws_host("sqs.eu-central-1.localhost.localstack.cloud"));
        assert!(!is_aws_host("amazonaws.com.evil.example"));
    }

    #[test]
    fn destination_group_ids() {
        let destination = |value: serde_json::Value| {
            serde_json::from_value::<SqsDestinationConfig>(value).expect("deserializes").validate()
        };
        let fifo = destination(json!({"queue_url": "http://h:1/000000000000/out.fifo"})).expect("valid");
        assert_eq!(fifo.message_group_id.as_deref(), Some(DEFAULT_MESSAGE_GROUP_ID));
        let standard = destination(json!({"queue_url": "http://h:1/000000000000/out"})).expect("valid");
        assert_eq!(standard.message_group_id, None);
        let named = destination(json!({"queue_url": "http://h:1/0/out.fifo", "message_group_id": "orders"}));
        assert_eq!(named.expect("valid").message_group_id.as_deref(), Some("orders"));
        let err =
            destination(json!({"queue_url": "http://h:1/0/out.fifo", "message_group_id": "a b"})).expect_err("space");
        assert!(err.to_string().contains("message_group_id:"), "{err}");
        let err = destination(json!({"queue_url": "http://h:1/0/out.fifo", "message_group_id": "x".repeat(129)}))
            .expect_err("too long");
        assert!(err.to_string().contains("message_group_id: at most 128"), "{err}");
    }
}
