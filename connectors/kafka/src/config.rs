//! The YAML shapes of the Kafka source and destination, and how they become
//! librdkafka settings.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rdkafka::ClientConfig;
use serde::{Deserialize, Deserializer};
use switchyard_sdk::ConnectorError;

/// `{ kafka: { brokers, topics, group_id, starting_position, properties } }` as a source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Bootstrap servers, comma-separated (`host1:9092,host2:9092`).
    pub brokers: String,
    /// At least one topic.
    pub topics: Vec<String>,
    /// The consumer group; its committed offsets are where a restart resumes.
    pub group_id: String,
    /// Where a partition without a committed offset starts.
    #[serde(default)]
    pub starting_position: StartingPosition,
    /// Passed to librdkafka as they are (`security.protocol`, `sasl.*`, `ssl.*`,
    /// tuning). Keys Switchyard sets itself are refused.
    #[serde(default, deserialize_with = "properties")]
    pub properties: BTreeMap<String, String>,
}

/// Where a partition without a committed offset starts, as Lambda's
/// `StartingPosition`: `latest`, `earliest` or `{ timestamp: <RFC 3339> }`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartingPosition {
    #[default]
    Latest,
    Earliest,
    /// The first record at or after this time (Lambda's `AT_TIMESTAMP`).
    Timestamp(DateTime<Utc>),
}

/// `{ kafka: { brokers, topic, properties } }` as a destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaDestinationConfig {
    /// Bootstrap servers, comma-separated.
    pub brokers: String,
    pub topic: String,
    /// Passed to librdkafka as they are; keys Switchyard sets itself are refused.
    #[serde(default, deserialize_with = "properties")]
    pub properties: BTreeMap<String, String>,
}

/// Settings the source owns: the checkpoint logic depends on them, so a
/// property overriding them would silently break at-least-once delivery.
const SOURCE_OWNED: &[(&str, &str)] = &[
    ("enable.auto.offset.store", "offsets are stored by Switchyard once records are acknowledged"),
    ("group.id", "use group_id"),
    ("bootstrap.servers", "use brokers"),
];

/// Settings the destination owns: its success means "written to every in-sync replica, once".
const DESTINATION_OWNED: &[(&str, &str)] = &[
    ("bootstrap.servers", "use brokers"),
    ("enable.idempotence", "the destination is always idempotent"),
    ("acks", "the destination always waits for all in-sync replicas"),
];

impl KafkaSourceConfig {
    /// Checks what serde cannot and builds the consumer's librdkafka settings.
    pub(crate) fn client_config(&self) -> Result<ClientConfig, ConnectorError> {
        non_empty("brokers", &self.brokers)?;
        non_empty("group_id", &self.group_id)?;
        if self.topics.is_empty() {
            return Err(ConnectorError::Config("topics: expected at least one topic".into()));
        }
        for (i, topic) in self.topics.iter().enumerate() {
            non_empty(&format!("topics[{i}]"), topic)?;
        }
        refuse_owned(&self.properties, SOURCE_OWNED)?;

        let mut config = ClientConfig::new();
        // librdkafka prefetches up to 64 MB per partition by default; bound it
        // so memory follows configuration, not the backlog (properties may
        // raise it for throughput). The count threshold stays librdkafka's
        // (100,000 messages): a low one makes it fetch in small pieces, and a
        // broker answering each fetch slowly then sets the pace (1,000 gave
        // less than half the throughput of a bare consumer on the test broker).
        config.set("queued.max.messages.kbytes", "8192").set("fetch.max.bytes", "8388608");
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        let reset = match self.starting_position {
            StartingPosition::Latest => "latest",
            // A timestamp is looked up per partition on assignment; when that
            // lookup fails, reading too much (duplicates) beats skipping records.
            StartingPosition::Earliest | StartingPosition::Timestamp(_) => "earliest",
        };
        config
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            // Offsets are stored only for acknowledged records (the
            // OffsetTracker's checkpoint); librdkafka commits what is stored
            // every second, and synchronously on revoke and shutdown.
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
            .set("auto.offset.reset", reset)
            .set("statistics.interval.ms", "5000")
            .set("enable.partition.eof", "false");
        validate(&config)?;
        Ok(config)
    }
}

impl KafkaDestinationConfig {
    pub(crate) fn client_config(&self) -> Result<ClientConfig, ConnectorError> {
        non_empty("brokers", &self.brokers)?;
        non_empty("topic", &self.topic)?;
        refuse_owned(&self.properties, DESTINATION_OWNED)?;
        let mut config = ClientConfig::new();
        // A destination is retried by the engine: give up on a delivery
        // sooner than librdkafka's 5 minutes unless the user says otherwise.
        config.set("message.timeout.ms", "30000");
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config.set("bootstrap.servers", &self.brokers).set("enable.idempotence", "true").set("acks", "all");
        validate(&config)?;
        Ok(config)
    }
}

fn non_empty(key: &str, value: &str) -> Result<(), ConnectorError> {
    if value.trim().is_empty() {
        return Err(ConnectorError::Config(format!("{key}: must not be empty")));
    }
    Ok(())
}

fn refuse_owned(properties: &BTreeMap<String, String>, owned: &[(&str, &str)]) -> Result<(), ConnectorError> {
    for (key, why) in owned {
        if properties.contains_key(*key) {
            return Err(ConnectorError::Config(format!("properties.{key}: set by Switchyard ({why})")));
        }
    }
    Ok(())
}

/// librdkafka checks names and values when the native config is built: an
/// unknown property or a bad value is a configuration error now, not a
/// failure when the source starts.
fn validate(config: &ClientConfig) -> Result<(), ConnectorError> {
    config.create_native_config().map(drop).map_err(|e| ConnectorError::Config(format!("properties: {e}")))
}

/// Property values as text, also when YAML wrote them as numbers or booleans
/// (`session.timeout.ms: 45000`).
fn properties<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Bool(bool),
        Int(i64),
        Float(f64),
    }
    let raw = BTreeMap::<String, Scalar>::deserialize(deserializer)?;
    Ok(raw
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                Scalar::Text(s) => s,
                Scalar::Bool(b) => b.to_string(),
                Scalar::Int(i) => i.to_string(),
                Scalar::Float(f) => f.to_string(),
            };
            (key, text)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn source(value: serde_json::Value) -> Result<KafkaSourceConfig, serde_json::Error> {
        serde_json::from_value(value)
    }

    #[test]
    fn starting_positions() {
        let base = json!({"brokers": "b:9092", "topics": ["t"], "group_id": "g"});
        assert_eq!(source(base.clone()).unwrap().starting_position, StartingPosition::Latest);
        let mut earliest = base.clone();
        earliest["starting_position"] = json!("earliest");
        assert_eq!(source(earliest).unwrap().starting_position, StartingPosition::Earliest);
        let mut at = base.clone();
        at["starting_position"] = json!({"timestamp": "2026-01-02T03:04:05+01:00"});
        let expected = DateTime::parse_from_rfc3339("2026-01-02T02:04:05Z").unwrap().with_timezone(&Utc);
        assert_eq!(source(at).unwrap().starting_position, StartingPosition::Timestamp(expected));
        let mut bad = base;
        bad["starting_position"] = json!("trim_horizon");
        assert!(source(bad).is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = source(json!({"brokers": "b", "topics": ["t"], "group_id": "g", "topic": "x"})).unwrap_err();
        assert!(err.to_string().contains("unknown field `topic`"), "{err}");
    }

    #[test]
    fn owned_properties_are_refused_by_name() {
        for key in ["enable.auto.offset.store", "group.id", "bootstrap.servers"] {
            let config =
                source(json!({"brokers": "b", "topics": ["t"], "group_id": "g", "properties": {key: "x"}})).unwrap();
            let err = config.client_config().unwrap_err().to_string();
            assert!(err.contains(&format!("properties.{key}")), "{err}");
        }
    }

    #[test]
    fn properties_accept_scalars_and_are_checked_by_librdkafka() {
        let config = source(json!({
            "brokers": "b", "topics": ["t"], "group_id": "g",
            "properties": {"session.timeout.ms": 45000, "check.crcs": true, "security.protocol": "plaintext"}
        }))
        .unwrap();
        assert_eq!(config.properties["session.timeout.ms"], "45000");
        config.client_config().expect("valid librdkafka properties");

        let config =
            source(json!({"brokers": "b", "topics": ["t"], "group_id": "g", "properties": {"no.such": "1"}})).unwrap();
        let err = config.client_config().unwrap_err().to_string();
        assert!(err.contains("no.such"), "{err}");
    }

    #[test]
    fn empty_topics_are_refused() {
        let config = source(json!({"brokers": "b", "topics": [], "group_id": "g"})).unwrap();
        assert!(config.client_config().unwrap_err().to_string().contains("topics"));
    }
}
