//! The YAML shapes of the Kinesis source and destination, and the checks that
//! turn them into settings the rest of the crate can trust.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use switchyard_aws::ClientSettings;
use switchyard_sdk::ConnectorError;

/// How often an idle shard is read when `poll_interval` is left out: Lambda
/// polls each shard about once a second.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Kinesis allows five GetRecords calls a second per shard: a reader never
/// calls more often than this, whatever else is configured.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How often the shard list is read again to find the children of a reshard.
pub const DEFAULT_SHARD_DISCOVERY_INTERVAL: Duration = Duration::from_secs(10);
/// ListShards is limited to 100 calls a second per stream; once a second is
/// more than enough to notice a reshard.
const MIN_SHARD_DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);
/// Kinesis's limit on a partition key.
pub(crate) const MAX_PARTITION_KEY_CHARS: usize = 256;

/// Where a shard is read from when its mapping has no checkpoint for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartingPosition {
    /// The oldest record the stream still keeps.
    TrimHorizon,
    /// Only records added after the reader started.
    #[default]
    Latest,
    /// The first record that arrived at or after this time.
    AtTimestamp(DateTime<Utc>),
}

impl<'de> Deserialize<'de> for StartingPosition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PositionVisitor)
    }
}

const POSITION_EXPECTED: &str =
    "starting_position: expected trim_horizon, latest or {timestamp: <RFC 3339 time or epoch seconds>}";

struct PositionVisitor;

impl<'de> Visitor<'de> for PositionVisitor {
    type Value = StartingPosition;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(POSITION_EXPECTED)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        match value {
            "trim_horizon" | "TRIM_HORIZON" => Ok(StartingPosition::TrimHorizon),
            "latest" | "LATEST" => Ok(StartingPosition::Latest),
            other => Err(E::custom(format!("{POSITION_EXPECTED}, got {other:?}"))),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut at = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != "timestamp" {
                return Err(de::Error::custom(format!("{POSITION_EXPECTED}, got the key {key:?}")));
            }
            let value: serde_json::Value = map.next_value()?;
            at = Some(parse_timestamp(&value).map_err(de::Error::custom)?);
        }
        at.map(StartingPosition::AtTimestamp)
            .ok_or_else(|| de::Error::custom(format!("{POSITION_EXPECTED}, got an empty map")))
    }
}

/// `2024-05-01T12:00:00Z` or epoch seconds (`1714564800`, `1714564800.5`).
fn parse_timestamp(value: &serde_json::Value) -> Result<DateTime<Utc>, String> {
    let bad = || format!("starting_position.timestamp: expected an RFC 3339 time or epoch seconds, got {value}");
    match value {
        serde_json::Value::String(text) => {
            if let Ok(at) = DateTime::parse_from_rfc3339(text.trim()) {
                return Ok(at.with_timezone(&Utc));
            }
            // YAML hands a bare number over as a string when quoted.
            text.trim().parse::<f64>().ok().and_then(epoch).ok_or_else(bad)
        }
        serde_json::Value::Number(n) => n.as_f64().and_then(epoch).ok_or_else(bad),
        _ => Err(bad()),
    }
}

fn epoch(seconds: f64) -> Option<DateTime<Utc>> {
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    // Millisecond precision is all Kinesis keeps.
    let millis = (seconds * 1000.0).round() as i64;
    Utc.timestamp_millis_opt(millis).single()
}

/// `{ kinesis: { stream | stream_arn, endpoint_url, region, starting_position,
/// poll_interval, shard_discovery_interval } }` as a source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinesisSourceConfig {
    /// The stream's name; or give `stream_arn`.
    #[serde(default)]
    pub stream: Option<String>,
    /// `arn:aws:kinesis:<region>:<account>:stream/<name>`; its region is used
    /// when `region` is not set.
    #[serde(default)]
    pub stream_arn: Option<String>,
    /// Overrides where requests go; `""` (what `${AWS_ENDPOINT_URL:-}`
    /// becomes when unset) means not set.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Overrides the region; `""` means not set.
    #[serde(default)]
    pub region: Option<String>,
    /// Where a shard without a checkpoint is read from (default `latest`).
    #[serde(default)]
    pub starting_position: StartingPosition,
    /// How often a shard that is caught up is read (default 1 s, at least
    /// 200 ms: Kinesis allows five GetRecords a second per shard).
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often the shard list is read again (default 10 s).
    #[serde(default = "default_shard_discovery_interval", with = "humantime_serde")]
    pub shard_discovery_interval: Duration,
}

/// `{ kinesis: { stream | stream_arn, endpoint_url, region, partition_key } }`
/// as a destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinesisDestinationConfig {
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub stream_arn: Option<String>,
    #[serde(default)]
    pub endpoint_url: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// The partition key of every record. Default: derived from each
    /// record's bytes (a SHA-256 prefix), so records spread over the shards
    /// and the same record always lands on the same shard.
    #[serde(default)]
    pub partition_key: Option<String>,
}

fn default_poll_interval() -> Duration {
    DEFAULT_POLL_INTERVAL
}

fn default_shard_discovery_interval() -> Duration {
    DEFAULT_SHARD_DISCOVERY_INTERVAL
}

/// The stream a source or destination works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamName {
    pub(crate) name: String,
    /// From `stream_arn`: the ARN as configured, and the region and account
    /// in it.
    pub(crate) arn: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) account: Option<String>,
}

/// The checked source settings.
#[derive(Debug, Clone)]
pub(crate) struct SourceSettings {
    pub(crate) stream: StreamName,
    pub(crate) client: ClientSettings,
    pub(crate) starting_position: StartingPosition,
    pub(crate) poll_interval: Duration,
    pub(crate) shard_discovery_interval: Duration,
}

/// The checked destination settings.
#[derive(Debug, Clone)]
pub(crate) struct DestinationSettings {
    pub(crate) stream: StreamName,
    pub(crate) client: ClientSettings,
    pub(crate) partition_key: Option<String>,
}

impl KinesisSourceConfig {
    /// A source of `stream` with every other key at its default.
    pub fn for_stream(stream: impl Into<String>) -> Self {
        Self {
            stream: Some(stream.into()),
            stream_arn: None,
            endpoint_url: None,
            region: None,
            starting_position: StartingPosition::default(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            shard_discovery_interval: DEFAULT_SHARD_DISCOVERY_INTERVAL,
        }
    }

    /// Checks what serde cannot, naming the key at fault.
    pub(crate) fn validate(&self) -> Result<SourceSettings, ConnectorError> {
        let stream = StreamName::parse(self.stream.as_deref(), self.stream_arn.as_deref())?;
        let client = ClientSettings::parse(self.endpoint_url.as_deref(), self.region.as_deref())?;
        if self.poll_interval < MIN_POLL_INTERVAL {
            return Err(ConnectorError::Config(format!(
                "poll_interval: at least {} (Kinesis allows five GetRecords calls a second per shard), got {}",
                humantime::format_duration(MIN_POLL_INTERVAL),
                humantime::format_duration(self.poll_interval)
            )));
        }
        if self.shard_discovery_interval < MIN_SHARD_DISCOVERY_INTERVAL {
            return Err(ConnectorError::Config(format!(
                "shard_discovery_interval: at least {}, got {}",
                humantime::format_duration(MIN_SHARD_DISCOVERY_INTERVAL),
                humantime::format_duration(self.shard_discovery_interval)
            )));
        }
        Ok(SourceSettings {
            stream,
            client,
            starting_position: self.starting_position,
            poll_interval: self.poll_interval,
            shard_discovery_interval: self.shard_discovery_interval,
        })
    }
}

impl KinesisDestinationConfig {
    /// A destination for `stream` with every other key at its default.
    pub fn for_stream(stream: impl Into<String>) -> Self {
        Self { stream: Some(stream.into()), stream_arn: None, endpoint_url: None, region: None, partition_key: None }
    }

    pub(crate) fn validate(&self) -> Result<DestinationSettings, ConnectorError> {
        let stream = StreamName::parse(self.stream.as_deref(), self.stream_arn.as_deref())?;
        let client = ClientSettings::parse(self.endpoint_url.as_deref(), self.region.as_deref())?;
        let partition_key = self.partition_key.as_deref().filter(|k| !k.is_empty());
        if let Some(key) = partition_key {
            let count = key.chars().count();
            if count > MAX_PARTITION_KEY_CHARS {
                return Err(ConnectorError::Config(format!(
                    "partition_key: at most {MAX_PARTITION_KEY_CHARS} characters, got {count}"
                )));
            }
        }
        Ok(DestinationSettings { stream, client, partition_key: partition_key.map(str::to_string) })
    }
}

impl StreamName {
    fn parse(stream: Option<&str>, arn: Option<&str>) -> Result<Self, ConnectorError> {
        let stream = stream.map(str::trim).filter(|s| !s.is_empty());
        let arn = arn.map(str::trim).filter(|s| !s.is_empty());
        match (stream, arn) {
            (None, None) => Err(ConnectorError::Config("stream: set stream (a name) or stream_arn".into())),
            (Some(name), None) => {
                check_name("stream", name)?;
                Ok(Self { name: name.to_string(), arn: None, region: None, account: None })
            }
            (named, Some(arn)) => {
                let parsed = parse_arn(arn)?;
                if let Some(name) = named
                    && name != parsed.name
                {
                    return Err(ConnectorError::Config(format!(
                        "stream: {name:?} is not the stream of stream_arn ({:?}); set one of them",
                        parsed.name
                    )));
                }
                Ok(parsed)
            }
        }
    }
}

/// Kinesis's rule for stream names: 1 to 128 of `[a-zA-Z0-9_.-]`.
fn check_name(key: &str, name: &str) -> Result<(), ConnectorError> {
    let count = name.chars().count();
    if count > 128 {
        return Err(ConnectorError::Config(format!("{key}: a stream name has at most 128 characters, got {count}")));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err(ConnectorError::Config(format!(
            "{key}: a stream name has only letters, digits, '_', '.' and '-', got {bad:?} in {name:?}"
        )));
    }
    Ok(())
}

/// `arn:<partition>:kinesis:<region>:<account>:stream/<name>`.
fn parse_arn(arn: &str) -> Result<StreamName, ConnectorError> {
    let bad = || {
        ConnectorError::Config(format!(
            "stream_arn: expected arn:aws:kinesis:<region>:<account>:stream/<name>, got {arn:?}"
        ))
    };
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ["arn", partition, "kinesis", region, account, resource] = parts.as_slice() else {
        return Err(bad());
    };
    let Some(name) = resource.strip_prefix("stream/") else { return Err(bad()) };
    if partition.is_empty() || region.is_empty() || account.is_empty() {
        return Err(bad());
    }
    check_name("stream_arn", name)?;
    Ok(StreamName {
        name: name.to_string(),
        arn: Some(arn.to_string()),
        region: Some(region.to_string()),
        account: Some(account.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn source(value: serde_json::Value) -> Result<KinesisSourceConfig, serde_json::Error> {
        serde_json::from_value(value)
    }

    #[test]
    fn source_defaults() {
        let config = source(json!({"stream": "orders"})).expect("deserializes");
        assert_eq!(config.starting_position, StartingPosition::Latest);
        assert_eq!(config.poll_interval, DEFAULT_POLL_INTERVAL);
        assert_eq!(config.shard_discovery_interval, DEFAULT_SHARD_DISCOVERY_INTERVAL);
        let settings = config.validate().expect("valid");
        assert_eq!(settings.stream.name, "orders");
        assert_eq!(settings.stream.arn, None);
        assert_eq!(settings.client.endpoint_url, None);
    }

    #[test]
    fn starting_positions() {
        let position = |value: serde_json::Value| {
            source(json!({"stream": "s", "starting_position": value})).map(|c| c.starting_position)
        };
        assert_eq!(position(json!("trim_horizon")).expect("valid"), StartingPosition::TrimHorizon);
        assert_eq!(position(json!("LATEST")).expect("valid"), StartingPosition::Latest);
        let at = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).single().expect("a valid time");
        assert_eq!(
            position(json!({"timestamp": "2024-05-01T14:00:00+02:00"})).expect("valid"),
            StartingPosition::AtTimestamp(at)
        );
        assert_eq!(position(json!({"timestamp": 1_714_564_800})).expect("valid"), StartingPosition::AtTimestamp(at));
        assert_eq!(position(json!({"timestamp": "1714564800"})).expect("valid"), StartingPosition::AtTimestamp(at));
    }

    #[test]
    fn bad_starting_positions_name_the_key() {
        for bad in [json!("earliest"), json!({"timestamp": "yesterday"}), json!({"at": 1}), json!(3), json!({})] {
            let error = source(json!({"stream": "s", "starting_position": bad})).expect_err("invalid");
            assert!(error.to_string().contains("starting_position"), "{bad}: {error}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error = source(json!({"stream": "s", "batch_size": 10})).expect_err("unknown key");
        assert!(error.to_string().contains("unknown field `batch_size`"), "{error}");
        let error = serde_json::from_value::<KinesisDestinationConfig>(json!({"stream": "s", "queue_url": "x"}))
            .expect_err("unknown key");
        assert!(error.to_string().contains("unknown field `queue_url`"), "{error}");
    }

    #[test]
    fn stream_or_arn() {
        let validate = |value: serde_json::Value| source(value).expect("deserializes").validate();
        let error = validate(json!({"stream": ""})).expect_err("no stream");
        assert!(error.to_string().contains("stream: set stream (a name) or stream_arn"), "{error}");
        let settings =
            validate(json!({"stream_arn": "arn:aws:kinesis:eu-west-1:123456789012:stream/orders"})).expect("valid");
        assert_eq!(settings.stream.name, "orders");
        assert_eq!(settings.stream.region.as_deref(), Some("eu-west-1"));
        assert_eq!(settings.stream.account.as_deref(), Some("123456789012"));
        let error = validate(json!({"stream_arn": "arn:aws:sqs:eu-west-1:1:orders"})).expect_err("not kinesis");
        assert!(error.to_string().starts_with("invalid configuration: stream_arn: expected arn:aws:kinesis"));
        let error = validate(json!({"stream": "a", "stream_arn": "arn:aws:kinesis:r:1:stream/b"})).expect_err("both");
        assert!(error.to_string().contains("is not the stream of stream_arn"), "{error}");
        let error = validate(json!({"stream": "a b"})).expect_err("space");
        assert!(error.to_string().contains("stream: a stream name has only"), "{error}");
    }

    #[test]
    fn intervals_and_client_settings() {
        let validate = |value: serde_json::Value| source(value).expect("deserializes").validate();
        let error = validate(json!({"stream": "s", "poll_interval": "100ms"})).expect_err("too often");
        assert!(error.to_string().contains("poll_interval: at least 200ms"), "{error}");
        let error = validate(json!({"stream": "s", "shard_discovery_interval": "10ms"})).expect_err("too often");
        assert!(error.to_string().contains("shard_discovery_interval: at least 1s"), "{error}");
        let settings =
            validate(json!({"stream": "s", "endpoint_url": "", "region": "", "poll_interval": "250ms"})).expect("ok");
        assert_eq!((settings.client.endpoint_url, settings.client.region), (None, None));
        assert_eq!(settings.poll_interval, Duration::from_millis(250));
        let error = validate(json!({"stream": "s", "endpoint_url": "ftp://x"})).expect_err("scheme");
        assert!(error.to_string().contains("endpoint_url: expected http(s)"), "{error}");
        let error = validate(json!({"stream": "s", "region": "us east"})).expect_err("region");
        assert!(error.to_string().contains("region: expected a name"), "{error}");
    }

    #[test]
    fn destination_partition_keys() {
        let validate = |value: serde_json::Value| {
            serde_json::from_value::<KinesisDestinationConfig>(value).expect("deserializes").validate()
        };
        assert_eq!(validate(json!({"stream": "s"})).expect("valid").partition_key, None);
        assert_eq!(validate(json!({"stream": "s", "partition_key": ""})).expect("valid").partition_key, None);
        let fixed = validate(json!({"stream": "s", "partition_key": "all"})).expect("valid");
        assert_eq!(fixed.partition_key.as_deref(), Some("all"));
        let error = validate(json!({"stream": "s", "partition_key": "k".repeat(257)})).expect_err("too long");
        assert!(error.to_string().contains("partition_key: at most 256"), "{error}");
    }
}
