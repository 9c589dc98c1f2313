//! The configuration file: serde structs that mirror the YAML, and the checks
//! that run once at load so the rest of the engine never sees an invalid value.

mod interpolate;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use interpolate::interpolate;
#[cfg(feature = "rabbitmq")]
pub use switchyard_amqp::{RabbitMqDestinationConfig, RabbitMqSourceConfig};
pub use switchyard_http::HttpDestinationConfig;
#[cfg(feature = "kafka")]
pub use switchyard_kafka::{KafkaDestinationConfig, KafkaSourceConfig};
#[cfg(feature = "kinesis")]
pub use switchyard_kinesis::{KinesisDestinationConfig, KinesisSourceConfig};
#[cfg(feature = "mqtt")]
pub use switchyard_mqtt::{MqttDestinationConfig, MqttSourceConfig};
#[cfg(feature = "nats")]
pub use switchyard_nats::{NatsDestinationConfig, NatsSourceConfig};
#[cfg(feature = "schedule")]
pub use switchyard_schedule::ScheduleConfig;
#[cfg(feature = "sqs")]
pub use switchyard_sqs::{SqsDestinationConfig, SqsSourceConfig};

/// A config error: the file, the key path, and what was expected.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {path}{sep}{message}", sep = if path.is_empty() { "" } else { ": " })]
pub struct ConfigError {
    pub file: String,
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub functions: BTreeMap<String, FunctionConfig>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub mappings: Vec<MappingConfig>,
}

/// `mappings:` with every entry commented out is an empty list, not an error.
fn null_as_empty<'de, D: serde::Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    /// How long SIGTERM waits for in-flight work before exiting.
    #[serde(default = "defaults::shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How long a client may take to send a request's head, and then its
    /// body: a client that sends them a byte at a time is cut off after it.
    #[serde(default = "defaults::read_timeout", with = "humantime_serde")]
    pub read_timeout: Duration,
    /// After SIGTERM, how long `/readyz` answers 503 while requests are
    /// still served, so a load balancer stops sending before intake stops.
    #[serde(default, with = "humantime_serde")]
    pub drain_delay: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: defaults::listen(),
            shutdown_grace: defaults::shutdown_grace(),
            read_timeout: defaults::read_timeout(),
            drain_delay: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    #[serde(default = "defaults::state_dir")]
    pub dir: PathBuf,
    /// Asynchronous events held at once, all functions together; past it an
    /// async request is answered 429.
    #[serde(default = "defaults::max_queued_events")]
    pub max_queued_events: NonZeroUsize,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self { dir: defaults::state_dir(), max_queued_events: defaults::max_queued_events() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionConfig {
    pub http: Option<HttpFunctionConfig>,
    /// An unmodified Lambda function: a runtime Switchyard starts and talks
    /// to over the Lambda Runtime API.
    pub lambda: Option<LambdaFunctionConfig>,
    /// Invocations in flight at once.
    #[serde(default = "defaults::concurrency")]
    pub concurrency: NonZeroUsize,
    /// Synchronous callers that may wait for a free slot; past it they are throttled.
    #[serde(default = "defaults::max_waiting")]
    pub max_waiting: usize,
    /// How long a synchronous caller waits for a free slot before it is throttled.
    #[serde(default = "defaults::max_wait", with = "humantime_serde")]
    pub max_wait: Duration,
    #[serde(default, rename = "async")]
    pub async_: AsyncConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFunctionConfig {
    pub url: String,
    #[serde(default = "defaults::http_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A process Switchyard starts, watches and restarts, serving `url`.
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory of `command`.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LambdaFunctionConfig {
    /// The runtime's bootstrap: `[python3, -m, awslambdaric]`, `[./bootstrap]`.
    pub command: Vec<String>,
    /// `_HANDLER`, also passed as the last argument (awslambdaric, aws-lambda-ric).
    pub handler: Option<String>,
    /// The function's code: `LAMBDA_TASK_ROOT` and the working directory.
    pub dir: PathBuf,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Memory per instance (Lambda: 128MB to 10GB), enforced.
    #[serde(default = "defaults::lambda_memory", deserialize_with = "bytesize::deserialize")]
    pub memory: usize,
    /// How long an invocation may run (Lambda: default 3s, at most 15m).
    #[serde(default = "defaults::lambda_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// An instance unused this long is stopped.
    #[serde(default = "defaults::lambda_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsyncConfig {
    /// Retries after a function error (Lambda: 0..=2, default 2).
    #[serde(default = "defaults::max_retry_attempts")]
    pub max_retry_attempts: u32,
    /// Events older than this are not invoked again (Lambda: 60s..6h, default 6h).
    #[serde(default = "defaults::max_event_age", with = "humantime_serde")]
    pub max_event_age: Duration,
    #[serde(default)]
    pub backoff: BackoffConfig,
    pub on_success: Option<DestinationConfig>,
    /// Where events go once retries or event age are spent; the embedded
    /// dead-letter store when not set.
    pub on_failure: Option<DestinationConfig>,
}

impl Default for AsyncConfig {
    fn default() -> Self {
        Self {
            max_retry_attempts: defaults::max_retry_attempts(),
            max_event_age: defaults::max_event_age(),
            backoff: BackoffConfig::default(),
            on_success: None,
            on_failure: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    #[serde(default = "defaults::backoff_initial", with = "humantime_serde")]
    pub initial: Duration,
    #[serde(default = "defaults::backoff_max", with = "humantime_serde")]
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self { initial: defaults::backoff_initial(), max: defaults::backoff_max() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum DestinationConfig {
    Http(HttpDestinationConfig),
    /// An asynchronous invocation of another function.
    Function(FunctionDestinationConfig),
    /// The embedded dead-letter store (`switchyard dlq ...`).
    Dlq(DlqDestinationConfig),
    /// A Kafka topic (idempotent producer, acks=all).
    #[cfg(feature = "kafka")]
    Kafka(KafkaDestinationConfig),
    /// A RabbitMQ exchange (persistent messages, publisher confirms).
    #[cfg(feature = "rabbitmq")]
    Rabbitmq(RabbitMqDestinationConfig),
    /// An SQS queue (SendMessageBatch; FIFO group and deduplication ids).
    #[cfg(feature = "sqs")]
    Sqs(SqsDestinationConfig),
    /// A Kinesis data stream (PutRecords, only failed entries sent again).
    #[cfg(feature = "kinesis")]
    Kinesis(KinesisDestinationConfig),
    /// An MQTT topic (QoS 1, each publish acknowledged).
    #[cfg(feature = "mqtt")]
    Mqtt(MqttDestinationConfig),
    /// A NATS subject captured by a JetStream stream (each publish acknowledged).
    #[cfg(feature = "nats")]
    Nats(NatsDestinationConfig),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionDestinationConfig {
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqDestinationConfig {}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    pub name: String,
    pub source: SourceConfig,
    pub function: String,
    /// How records are grouped into one invocation (polled sources only);
    /// the source's Lambda defaults when not set.
    pub batch: Option<BatchConfig>,
    /// Batches in flight per ordering scope (a partition), split by key: 1..=10.
    #[serde(default = "defaults::parallelization")]
    pub parallelization: NonZeroUsize,
    #[serde(default)]
    pub retry: RetryConfig,
    /// Read `{"batchItemFailures": [...]}` answers and retry only those records.
    #[serde(default)]
    pub report_batch_item_failures: bool,
    /// Where records go once retries or record age are spent; the embedded
    /// dead-letter store when not set.
    pub on_failure: Option<DestinationConfig>,
    /// Event patterns, ORed: a record that matches none is acknowledged
    /// without invoking the function.
    #[serde(default)]
    pub filters: Vec<FilterConfig>,
    /// A jq program or an input transformer applied to each record's
    /// payload, and a jq program over each batch's event.
    pub transform: Option<TransformConfig>,
    /// The shape of the event the function receives.
    #[serde(default, deserialize_with = "FormatConfig::deserialize")]
    pub format: FormatConfig,
}

impl MappingConfig {
    /// The mapping's batching: as set, or the source's Lambda defaults.
    pub fn batch(&self) -> BatchConfig {
        self.batch.unwrap_or_else(|| self.source.default_batch())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// An EventBridge event pattern: a map, or its JSON text as Lambda takes it.
    pub pattern: serde_json::Value,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// A jq program run on each record; its output becomes the record's payload.
    pub record: Option<String>,
    /// A jq program run on each batch's event; its output is what the function receives.
    pub batch: Option<String>,
    /// EventBridge's input transformer: names for JSONPath values of the record...
    pub input_paths: Option<BTreeMap<String, String>>,
    /// ...and the text they are put into as `<name>`.
    pub input_template: Option<String>,
}

/// `format: lambda | raw | cloudevents`, or `format: {cloudevents: {...}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FormatConfig {
    /// The event Lambda delivers for the source.
    #[default]
    Lambda,
    /// The payload alone; a JSON array of payloads for a batch of several.
    Raw,
    CloudEvents(CloudEventsConfig),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudEventsConfig {
    #[serde(default)]
    pub mode: CloudEventsMode,
    /// The `type` attribute; `switchyard.<source kind>` when not set.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// The `source` attribute; `/switchyard/mappings/<mapping>` when not set.
    pub source: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloudEventsMode {
    /// The event as a JSON document (`application/cloudevents+json`).
    #[default]
    Structured,
    /// The payload as the body and the attributes as `ce-` headers (HTTP
    /// functions, one record per invocation).
    Binary,
}

impl FormatConfig {
    fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Nested {
            cloudevents: CloudEventsConfig,
        }
        let expected = "expected lambda, raw, cloudevents or {cloudevents: {mode, type, source}}";
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(name) => match name.as_str() {
                "lambda" => Ok(Self::Lambda),
                "raw" => Ok(Self::Raw),
                "cloudevents" => Ok(Self::CloudEvents(CloudEventsConfig::default())),
                other => Err(D::Error::custom(format!("unknown format {other:?}: {expected}"))),
            },
            value @ serde_json::Value::Object(_) => serde_json::from_value::<Nested>(value)
                .map(|n| Self::CloudEvents(n.cloudevents))
                .map_err(|e| D::Error::custom(format!("{e}: {expected}"))),
            other => Err(D::Error::custom(format!("got {other}: {expected}"))),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Records per invocation at most.
    pub size: NonZeroUsize,
    /// How long to wait for a batch to fill.
    #[serde(default, with = "humantime_serde")]
    pub window: Duration,
    /// Payload bytes per invocation at most (`6MB`, `256KB` or a number).
    #[serde(default = "defaults::max_bytes", deserialize_with = "bytesize::deserialize")]
    pub max_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after a function error; -1 retries forever (and stalls an
    /// ordered scope behind a poison record until it succeeds).
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: i64,
    /// Records older than this go to `on_failure` instead of the function.
    #[serde(default, with = "humantime_serde")]
    pub max_record_age: Option<Duration>,
    /// On a function error, split the batch in two and retry each half.
    #[serde(default)]
    pub bisect_on_error: bool,
    #[serde(default)]
    pub backoff: BackoffConfig,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: defaults::max_attempts(),
            max_record_age: None,
            bisect_on_error: false,
            backoff: BackoffConfig::default(),
        }
    }
}

mod bytesize {
    use serde::{Deserialize, Deserializer, de::Error};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }

    /// `6MB`, `256KB`, `1GB` (binary multiples, as Lambda's 6 MB limit is
    /// 6,291,456 bytes) or a plain number of bytes.
    pub fn parse(text: &str) -> Result<usize, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let n: u64 = digits.parse().map_err(|_| format!("{text:?}: expected a size like 6MB, 256KB or 1048576"))?;
        let factor: u64 = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "KB" | "KIB" => 1 << 10,
            "MB" | "MIB" => 1 << 20,
            "GB" | "GIB" => 1 << 30,
            _ => return Err(format!("{text:?}: expected a size like 6MB, 256KB or 1048576")),
        };
        n.checked_mul(factor)
            .filter(|&b| b > 0)
            .and_then(|b| usize::try_from(b).ok())
            .ok_or_else(|| format!("{text:?}: expected a size above 0"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Number(0) => Err(D::Error::custom("expected a size above 0")),
            Raw::Number(n) => usize::try_from(n).map_err(D::Error::custom),
            Raw::Text(t) => parse(&t).map_err(D::Error::custom),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SourceConfig {
    Webhook(WebhookConfig),
    #[cfg(feature = "schedule")]
    Schedule(ScheduleConfig),
    #[cfg(feature = "kafka")]
    Kafka(KafkaSourceConfig),
    #[cfg(feature = "rabbitmq")]
    Rabbitmq(RabbitMqSourceConfig),
    #[cfg(feature = "sqs")]
    Sqs(SqsSourceConfig),
    #[cfg(feature = "kinesis")]
    Kinesis(KinesisSourceConfig),
    #[cfg(feature = "mqtt")]
    Mqtt(MqttSourceConfig),
    #[cfg(feature = "nats")]
    Nats(NatsSourceConfig),
}

impl SourceConfig {
    /// The source's kind as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Webhook(_) => "webhook",
            #[cfg(feature = "schedule")]
            SourceConfig::Schedule(_) => "schedule",
            #[cfg(feature = "kafka")]
            SourceConfig::Kafka(_) => "kafka",
            #[cfg(feature = "rabbitmq")]
            SourceConfig::Rabbitmq(_) => "rabbitmq",
            #[cfg(feature = "sqs")]
            SourceConfig::Sqs(_) => "sqs",
            #[cfg(feature = "kinesis")]
            SourceConfig::Kinesis(_) => "kinesis",
            #[cfg(feature = "mqtt")]
            SourceConfig::Mqtt(_) => "mqtt",
            #[cfg(feature = "nats")]
            SourceConfig::Nats(_) => "nats",
        }
    }

    /// Whether Switchyard polls it and delivers batches synchronously (with
    /// `batch`, `retry` and `on_failure`), rather than accepting events.
    pub fn is_polled(&self) -> bool {
        match self {
            SourceConfig::Webhook(_) => false,
            #[cfg(feature = "schedule")]
            SourceConfig::Schedule(_) => false,
            #[cfg(feature = "kafka")]
            SourceConfig::Kafka(_) => true,
            #[cfg(feature = "rabbitmq")]
            SourceConfig::Rabbitmq(_) => true,
            #[cfg(feature = "sqs")]
            SourceConfig::Sqs(_) => true,
            #[cfg(feature = "kinesis")]
            SourceConfig::Kinesis(_) => true,
            #[cfg(feature = "mqtt")]
            SourceConfig::Mqtt(_) => true,
            #[cfg(feature = "nats")]
            SourceConfig::Nats(_) => true,
        }
    }

    /// Whether the broker dead-letters records itself, so a mapping without
    /// `on_failure` rejects failed records to it (RabbitMQ's dead-letter
    /// exchange) rather than keeping them in the embedded store.
    pub fn broker_dead_letters(&self) -> bool {
        match self {
            #[cfg(feature = "rabbitmq")]
            SourceConfig::Rabbitmq(_) => true,
            // The queue's redrive policy moves a message to its dead-letter
            // queue once it was received maxReceiveCount times.
            #[cfg(feature = "sqs")]
            SourceConfig::Sqs(_) => true,
            _ => false,
        }
    }

    /// Lambda's batching defaults for the source, when a mapping sets none.
    pub fn default_batch(&self) -> BatchConfig {
        let (size, window_ms) = match self {
            // Lambda's defaults for Kafka event source mappings.
            #[cfg(feature = "kafka")]
            SourceConfig::Kafka(_) => (100, 500),
            // Lambda's defaults for Amazon MQ event source mappings.
            #[cfg(feature = "rabbitmq")]
            SourceConfig::Rabbitmq(_) => (100, 500),
            // Lambda's defaults for SQS event source mappings.
            #[cfg(feature = "sqs")]
            SourceConfig::Sqs(_) => (10, 0),
            // Lambda's defaults for Kinesis event source mappings.
            #[cfg(feature = "kinesis")]
            SourceConfig::Kinesis(_) => (100, 0),
            #[cfg(feature = "nats")]
            SourceConfig::Nats(_) => (100, 500),
            _ => (1, 0),
        };
        BatchConfig {
            size: NonZeroUsize::new(size).expect("non-zero"),
            window: Duration::from_millis(window_ms),
            max_bytes: defaults::max_bytes(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub path: String,
    #[serde(default)]
    pub mode: WebhookMode,
    /// Accepted methods; any method when not set.
    pub methods: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookMode {
    /// The caller gets the function's answer.
    #[default]
    Sync,
    /// The caller gets 202 once the event is durably queued.
    Async,
}

mod defaults {
    use super::*;

    pub fn parallelization() -> NonZeroUsize {
        NonZeroUsize::new(1).expect("non-zero")
    }
    pub fn max_bytes() -> usize {
        6 * 1024 * 1024
    }
    pub fn max_attempts() -> i64 {
        10
    }
    pub fn listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9000))
    }
    pub fn shutdown_grace() -> Duration {
        Duration::from_secs(30)
    }
    pub fn read_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn state_dir() -> PathBuf {
        PathBuf::from("./switchyard-data")
    }
    pub fn max_queued_events() -> NonZeroUsize {
        NonZeroUsize::new(100_000).expect("non-zero")
    }
    pub fn concurrency() -> NonZeroUsize {
        NonZeroUsize::new(10).expect("non-zero")
    }
    pub fn max_waiting() -> usize {
        100
    }
    pub fn max_wait() -> Duration {
        Duration::from_secs(5)
    }
    pub fn lambda_memory() -> usize {
        128 << 20
    }
    pub fn lambda_timeout() -> Duration {
        Duration::from_secs(3)
    }
    pub fn lambda_idle_timeout() -> Duration {
        Duration::from_secs(300)
    }
    pub fn http_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_retry_attempts() -> u32 {
        2
    }
    pub fn max_event_age() -> Duration {
        Duration::from_secs(6 * 3600)
    }
    pub fn backoff_initial() -> Duration {
        Duration::from_secs(1)
    }
    pub fn backoff_max() -> Duration {
        Duration::from_secs(300)
    }
}

impl Config {
    /// Reads, interpolates, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            path: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&file, &text, |name| std::env::var(name).ok())
    }

    pub fn parse(file: &str, text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let error = |path: String, message: String| ConfigError { file: file.to_string(), path, message };
        let text = interpolate(text, env).map_err(|m| error(String::new(), m))?;
        // Read as YAML's own value first only to refuse a key given twice in
        // one map: read straight into JSON, the second would silently replace
        // the first (a second `functions:` block, a function named twice).
        serde_norway::from_str::<serde_norway::Value>(&text).map_err(|e| error(String::new(), e.to_string()))?;
        // YAML is read into a JSON value: the single-key map form of enums
        // (`source: {webhook: ...}`) is what the config uses, and
        // serde_json's deserializer takes it, where the YAML one wants tags.
        let tree: serde_json::Value = serde_norway::from_str(&text).map_err(|e| error(String::new(), e.to_string()))?;
        let tree = if tree.is_null() { serde_json::json!({}) } else { tree };
        let config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            error(path, e.into_inner().to_string())
        })?;
        validate::validate(&config).map_err(|(path, message)| error(path, message))?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests;
