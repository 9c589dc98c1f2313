//! The YAML shapes of the MQTT source and destination, the broker address they
//! share, and the checks serde cannot make.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use switchyard_sdk::ConnectorError;

/// Seconds between pings when nothing else is sent; the broker drops a client
/// it has not heard from for one and a half times this.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Messages the broker may have handed out unacknowledged at once (MQTT 5's
/// Receive Maximum); also the most the source buffers before it stops
/// reading. Lambda's default batch size for broker sources is 100.
pub const DEFAULT_MAX_INFLIGHT: u16 = 100;
/// The largest MQTT packet the source accepts (1 MiB). MQTT allows 256 MiB;
/// a bound keeps one message from taking the memory of many.
pub const DEFAULT_MAX_PACKET_SIZE: u32 = 1024 * 1024;
/// How long an MQTT 5 broker keeps the session (subscriptions and queued
/// messages) after the source disconnects: a day covers a restart, an upgrade
/// or a night's outage. MQTT 3.1.1 sessions have no expiry of their own.
pub const DEFAULT_SESSION_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);

/// The largest value of MQTT's variable byte integer: no packet is bigger.
const MQTT_MAX_PACKET: u32 = 268_435_455;
/// MQTT strings (topics, client ids) carry a 16-bit length.
const MQTT_MAX_STRING: usize = 65_535;

/// Which MQTT version the connector speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Protocol {
    /// MQTT 3.1.1, which every broker speaks.
    #[default]
    #[serde(rename = "v311", alias = "v3.1.1")]
    V311,
    /// MQTT 5: the source also sets a Receive Maximum, a session expiry and a
    /// Maximum Packet Size, and sees refusals with their reason codes.
    #[serde(rename = "v5", alias = "v5.0")]
    V5,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::V311 => "MQTT 3.1.1",
            Protocol::V5 => "MQTT 5",
        }
    }
}

/// `{ mqtt: { url, topics, ... } }` as a source.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSourceConfig {
    /// `mqtt://[user:password@]host[:port]` (1883) or `mqtts://...` (8883, TLS
    /// with the Mozilla roots).
    pub url: String,
    /// Topic filters, wildcards allowed (`devices/+/telemetry`, `site/#`).
    pub topics: Vec<String>,
    /// 1 (the default): every message is acknowledged only once its record
    /// was delivered. 0: the broker sends and forgets, so a disconnect or a
    /// restart loses what was not yet delivered.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// The session's name on the broker: messages for it are kept while the
    /// source is away. Defaults to `switchyard-<mapping>`. Required with
    /// `shared_group`, where each replica needs its own.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Subscribes `$share/<group>/<filter>`: the replicas in a group split the
    /// messages between them.
    #[serde(default)]
    pub shared_group: Option<String>,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Unacknowledged messages at most; see [`DEFAULT_MAX_INFLIGHT`].
    #[serde(default = "default_max_inflight")]
    pub max_inflight: u16,
    /// MQTT 5 only: how long the broker keeps the session after a disconnect
    /// (default [`DEFAULT_SESSION_EXPIRY`]).
    #[serde(default, with = "humantime_serde")]
    pub session_expiry: Option<Duration>,
    /// The largest packet accepted, in bytes (default 1 MiB). An MQTT 5 broker
    /// is told and does not send larger messages to this client; an MQTT
    /// 3.1.1 broker cannot be told, and a larger message breaks the connection.
    #[serde(default = "default_max_packet_size")]
    pub max_packet_size: u32,
}

/// `{ mqtt: { url, topic, ... } }` as a destination.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttDestinationConfig {
    /// As for the source.
    pub url: String,
    /// One topic name, no wildcards.
    pub topic: String,
    /// Only 1: a send succeeds once the broker acknowledged every message,
    /// which QoS 0 has no way to say.
    #[serde(default = "default_qos")]
    pub qos: u8,
    #[serde(default)]
    pub retain: bool,
    /// Defaults to a name unique to the process. The destination always uses
    /// a clean session: what is not acknowledged is sent again by the engine.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
}

fn default_qos() -> u8 {
    1
}

fn default_keep_alive() -> Duration {
    DEFAULT_KEEP_ALIVE
}

fn default_max_inflight() -> u16 {
    DEFAULT_MAX_INFLIGHT
}

fn default_max_packet_size() -> u32 {
    DEFAULT_MAX_PACKET_SIZE
}

// The URL may carry a password: Debug shows it redacted, so a config can be
// logged.
impl fmt::Debug for MqttSourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttSourceConfig")
            .field("url", &redact(&self.url))
            .field("topics", &self.topics)
            .field("qos", &self.qos)
            .field("client_id", &self.client_id)
            .field("shared_group", &self.shared_group)
            .field("protocol", &self.protocol)
            .field("keep_alive", &self.keep_alive)
            .field("max_inflight", &self.max_inflight)
            .field("session_expiry", &self.session_expiry)
            .field("max_packet_size", &self.max_packet_size)
            .finish()
    }
}

impl fmt::Debug for MqttDestinationConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttDestinationConfig")
            .field("url", &redact(&self.url))
            .field("topic", &self.topic)
            .field("qos", &self.qos)
            .field("retain", &self.retain)
            .field("client_id", &self.client_id)
            .field("protocol", &self.protocol)
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

/// What the source runs with once the config checked out.
#[derive(Debug, Clone)]
pub(crate) struct SourceSettings {
    pub(crate) endpoint: Endpoint,
    /// The filters as subscribed (with the `$share/<group>/` prefix).
    pub(crate) filters: Vec<String>,
    pub(crate) qos: u8,
    pub(crate) client_id: Option<String>,
    pub(crate) protocol: Protocol,
    pub(crate) keep_alive: Duration,
    pub(crate) max_inflight: u16,
    /// Seconds, for MQTT 5.
    pub(crate) session_expiry: u32,
    pub(crate) max_packet_size: u32,
}

impl MqttSourceConfig {
    /// Checks what serde cannot: the URL, the filters, the numbers.
    pub(crate) fn validate(&self) -> Result<SourceSettings, ConnectorError> {
        let endpoint = Endpoint::parse("url", &self.url)?;
        if self.topics.is_empty() {
            return Err(config("topics: name at least one topic filter"));
        }
        let group = match &self.shared_group {
            Some(group) => {
                if group.is_empty() || group.contains(['/', '+', '#']) || group.contains('\0') {
                    return Err(config(format!(
                        "shared_group: {group:?} must be non-empty without '/', '+', '#' (it becomes $share/<group>/<filter>)"
                    )));
                }
                if self.client_id.is_none() {
                    return Err(config(
                        "client_id: required with shared_group, and different on each replica (a shared client id makes replicas take the session from each other)",
                    ));
                }
                Some(group.as_str())
            }
            None => None,
        };
        let mut filters = Vec::with_capacity(self.topics.len());
        for (i, filter) in self.topics.iter().enumerate() {
            let key = format!("topics[{i}]");
            check_filter(&key, filter)?;
            match group {
                Some(_) if filter.starts_with("$share/") => {
                    return Err(config(format!(
                        "{key}: {filter:?} is already a shared subscription; drop shared_group or the $share/ prefix"
                    )));
                }
                Some(group) => filters.push(format!("$share/{group}/{filter}")),
                None => filters.push(filter.clone()),
            }
        }
        if let Some(duplicate) = filters.iter().enumerate().find(|(i, f)| filters[..*i].contains(f)) {
            return Err(config(format!("topics: {:?} is listed twice", duplicate.1)));
        }
        if self.qos > 1 {
            return Err(config(format!(
                "qos: {} is not supported; use 1 (at least once) or 0 (at most once: lossy)",
                self.qos
            )));
        }
        if let Some(client_id) = &self.client_id {
            check_client_id(client_id)?;
        }
        check_keep_alive(self.keep_alive)?;
        if self.max_inflight == 0 {
            return Err(config("max_inflight: must be at least 1"));
        }
        let session_expiry = match (self.protocol, self.session_expiry) {
            (Protocol::V311, Some(_)) => {
                return Err(config(
                    "session_expiry: only for protocol v5; an MQTT 3.1.1 session lasts until the broker's own expiry",
                ));
            }
            (_, expiry) => expiry.unwrap_or(DEFAULT_SESSION_EXPIRY),
        };
        if session_expiry < Duration::from_secs(1) {
            return Err(config("session_expiry: at least 1s, or messages would not be kept while away"));
        }
        // MQTT 5 carries it in a 32-bit count of seconds, where the maximum
        // means "never expires".
        let session_expiry = u32::try_from(session_expiry.as_secs()).unwrap_or(u32::MAX);
        if !(16..=MQTT_MAX_PACKET).contains(&self.max_packet_size) {
            return Err(config(format!("max_packet_size: between 16 and {MQTT_MAX_PACKET} bytes")));
        }
        Ok(SourceSettings {
            endpoint,
            filters,
            qos: self.qos,
            client_id: self.client_id.clone(),
            protocol: self.protocol,
            keep_alive: self.keep_alive,
            max_inflight: self.max_inflight,
            session_expiry,
            max_packet_size: self.max_packet_size,
        })
    }
}

impl MqttDestinationConfig {
    pub(crate) fn validate(&self) -> Result<Endpoint, ConnectorError> {
        let endpoint = Endpoint::parse("url", &self.url)?;
        if self.topic.is_empty() || self.topic.len() > MQTT_MAX_STRING || self.topic.contains('\0') {
            return Err(config("topic: a non-empty topic name of at most 65535 bytes"));
        }
        if self.topic.contains(['+', '#']) {
            return Err(config(format!("topic: {:?} has a wildcard; a message goes to one topic name", self.topic)));
        }
        if self.qos != 1 {
            return Err(config(format!(
                "qos: {} is not supported; the destination publishes with QoS 1 and waits for the broker's PUBACK",
                self.qos
            )));
        }
        if let Some(client_id) = &self.client_id {
            check_client_id(client_id)?;
        }
        check_keep_alive(self.keep_alive)?;
        Ok(endpoint)
    }
}

fn config(message: impl Into<String>) -> ConnectorError {
    ConnectorError::Config(message.into())
}

/// MQTT's rules for a subscription filter: `#` only as the whole last level,
/// `+` only as a whole level.
fn check_filter(key: &str, filter: &str) -> Result<(), ConnectorError> {
    if filter.is_empty() || filter.len() > MQTT_MAX_STRING || filter.contains('\0') {
        return Err(config(format!("{key}: a topic filter is 1 to 65535 bytes without NUL")));
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let last = i + 1 == levels.len();
        if level.contains('#') && (*level != "#" || !last) {
            return Err(config(format!("{key}: {filter:?}: '#' must be the whole last level (a/#)")));
        }
        if level.contains('+') && *level != "+" {
            return Err(config(format!("{key}: {filter:?}: '+' must be a whole level (a/+/c)")));
        }
    }
    Ok(())
}

fn check_client_id(client_id: &str) -> Result<(), ConnectorError> {
    if client_id.is_empty() || client_id.len() > MQTT_MAX_STRING || client_id.contains('\0') {
        return Err(config("client_id: 1 to 65535 bytes without NUL"));
    }
    Ok(())
}

fn check_keep_alive(keep_alive: Duration) -> Result<(), ConnectorError> {
    // rumqttc refuses less than 5 s for MQTT 5; MQTT carries whole seconds
    // in 16 bits.
    if keep_alive < Duration::from_secs(5) || keep_alive > Duration::from_secs(65_535) {
        return Err(config(format!("keep_alive: between 5s and 65535s, got {keep_alive:?}")));
    }
    Ok(())
}

/// A parsed broker URL.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// As written in the URL; an IPv6 literal keeps its brackets, which is
    /// the form `host:port` needs.
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: bool,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
}

impl Endpoint {
    pub(crate) fn parse(key: &str, url: &str) -> Result<Self, ConnectorError> {
        let invalid =
            |why: &str| config(format!("{key}: expected mqtt://[user:password@]host[:port] or mqtts://...: {why}"));
        // The parser's messages never quote the URL, so no password leaks.
        let parsed = url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
        let (tls, default_port) = match parsed.scheme() {
            "mqtt" => (false, 1883),
            "mqtts" => (true, 8883),
            other => return Err(invalid(&format!("unsupported scheme {other:?}"))),
        };
        let host = match parsed.host() {
            Some(url::Host::Domain(domain)) if !domain.is_empty() => domain.to_string(),
            Some(url::Host::Ipv4(address)) => address.to_string(),
            // rumqttc checks the certificate against the host as written,
            // brackets included, which no certificate names.
            Some(url::Host::Ipv6(_)) if tls => return Err(invalid("mqtts:// needs a host name, not an IPv6 address")),
            Some(url::Host::Ipv6(address)) => format!("[{address}]"),
            _ => return Err(invalid("no host")),
        };
        if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(invalid("no path, query or fragment is used"));
        }
        let decode = |text: &str, what: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8()
                .map(|value| value.into_owned())
                .map_err(|_| invalid(&format!("the {what} is not percent-encoded UTF-8")))
        };
        let username = match parsed.username() {
            "" => None,
            user => Some(decode(user, "user name")?),
        };
        let password = parsed.password().map(|p| decode(p, "password")).transpose()?;
        if password.is_some() && username.is_none() {
            return Err(invalid("a password needs a user name"));
        }
        Ok(Self { host, port: parsed.port().unwrap_or(default_port), tls, username, password })
    }
}

/// `mqtt://user@host:port`: the URL without its password, for logs and states.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        match &self.username {
            Some(user) => write!(f, "{scheme}://{user}@{}:{}", self.host, self.port),
            None => write!(f, "{scheme}://{}:{}", self.host, self.port),
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// The URL with the password replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn source(value: serde_json::Value) -> MqttSourceConfig {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn source_defaults() {
        let config = source(json!({"url": "mqtt://127.0.0.1", "topics": ["devices/+/telemetry"]}));
        assert_eq!(config.qos, 1);
        assert_eq!(config.protocol, Protocol::V311);
        assert_eq!(config.keep_alive, DEFAULT_KEEP_ALIVE);
        assert_eq!(config.max_inflight, DEFAULT_MAX_INFLIGHT);
        assert_eq!(config.max_packet_size, DEFAULT_MAX_PACKET_SIZE);
        assert!(config.client_id.is_none() && config.shared_group.is_none() && config.session_expiry.is_none());
        let settings = config.validate().unwrap();
        assert_eq!(settings.filters, ["devices/+/telemetry"]);
        assert_eq!(settings.endpoint.to_string(), "mqtt://127.0.0.1:1883");
        assert_eq!(settings.session_expiry, 86_400);
    }

    #[test]
    fn the_issue_example_parses() {
        let config = source(json!({
            "url": "mqtt://127.0.0.1:1883",
            "topics": ["devices/+/telemetry"],
            "qos": 1,
            "client_id": "switchyard-telemetry",
            "shared_group": "switchyard",
            "protocol": "v5",
            "keep_alive": "30s",
            "max_inflight": 100,
            "session_expiry": "2h",
        }));
        let settings = config.validate().unwrap();
        assert_eq!(settings.filters, ["$share/switchyard/devices/+/telemetry"]);
        assert_eq!(settings.protocol, Protocol::V5);
        assert_eq!(settings.session_expiry, 7200);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err =
            serde_json::from_value::<MqttSourceConfig>(json!({"url": "mqtt://h", "topics": ["t"], "clean": true}))
                .unwrap_err();
        assert!(err.to_string().contains("unknown field `clean`"), "{err}");
        let err =
            serde_json::from_value::<MqttSourceConfig>(json!({"url": "mqtt://h", "topics": ["t"], "protocol": "v4"}))
                .unwrap_err();
        assert!(err.to_string().contains("v311"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_by_key() {
        let cases = [
            (json!({"url": "http://h", "topics": ["t"]}), "url:"),
            (json!({"url": "not a url", "topics": ["t"]}), "url:"),
            (json!({"url": "mqtt://h/path", "topics": ["t"]}), "url:"),
            (json!({"url": "mqtt://h", "topics": []}), "topics:"),
            (json!({"url": "mqtt://h", "topics": [""]}), "topics[0]:"),
            (json!({"url": "mqtt://h", "topics": ["a/#/b"]}), "topics[0]:"),
            (json!({"url": "mqtt://h", "topics": ["a", "a+"]}), "topics[1]:"),
            (json!({"url": "mqtt://h", "topics": ["a", "a"]}), "listed twice"),
            (json!({"url": "mqtt://h", "topics": ["t"], "qos": 2}), "qos:"),
            (json!({"url": "mqtt://h", "topics": ["t"], "client_id": ""}), "client_id:"),
            (json!({"url": "mqtt://h", "topics": ["t"], "shared_group": "g"}), "client_id: required"),
            (json!({"url": "mqtt://h", "topics": ["t"], "shared_group": "a/b", "client_id": "c"}), "shared_group:"),
            (json!({"url": "mqtt://h", "topics": ["$share/g/t"], "shared_group": "g", "client_id": "c"}), "topics[0]:"),
            (json!({"url": "mqtt://h", "topics": ["t"], "keep_alive": "1s"}), "keep_alive:"),
            (json!({"url": "mqtt://h", "topics": ["t"], "max_inflight": 0}), "max_inflight:"),
            (json!({"url": "mqtt://h", "topics": ["t"], "session_expiry": "1h"}), "session_expiry:"),
            (json!({"url": "mqtt://h", "topics": ["t"], "protocol": "v5", "session_expiry": "0s"}), "session_expiry:"),
            (json!({"url": "mqtt://h", "topics": ["t"], "max_packet_size": 0}), "max_packet_size:"),
        ];
        for (value, key) in cases {
            let err = source(value.clone()).validate().err().unwrap_or_else(|| panic!("accepted {value}"));
            assert!(err.to_string().contains(key), "{value}: {err}");
        }
    }

    #[test]
    fn urls_hosts_credentials_and_tls() {
        let endpoint = Endpoint::parse("url", "mqtts://dev%40site:p%3Ass+w&x=@broker.example").unwrap();
        assert_eq!((endpoint.host.as_str(), endpoint.port, endpoint.tls), ("broker.example", 8883, true));
        assert_eq!(endpoint.username.as_deref(), Some("dev@site"));
        assert_eq!(endpoint.password.as_deref(), Some("p:ss+w&x="));
        assert_eq!(endpoint.to_string(), "mqtts://dev@site@broker.example:8883");

        let endpoint = Endpoint::parse("url", "mqtt://[::1]:1884/").unwrap();
        assert_eq!((endpoint.host.as_str(), endpoint.port), ("[::1]", 1884));
        assert!(endpoint.username.is_none() && endpoint.password.is_none());
        assert!(Endpoint::parse("url", "mqtts://[::1]").is_err());
    }

    #[test]
    fn passwords_stay_out_of_debug_and_errors() {
        let config = MqttDestinationConfig {
            url: "mqtt://user:s3cret@h:1883".into(),
            topic: "out".into(),
            qos: 1,
            retain: false,
            client_id: None,
            protocol: Protocol::V311,
            keep_alive: DEFAULT_KEEP_ALIVE,
        };
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret") && debug.contains("user:***@h:1883"), "{debug}");
        let err = Endpoint::parse("url", "mqtt://user:s3cret@h:notaport").err().unwrap().to_string();
        assert!(!err.contains("s3cret"), "{err}");
        let endpoint = Endpoint::parse("url", "mqtt://user:s3cret@h").unwrap();
        assert_eq!(format!("{endpoint} {endpoint:?}"), "mqtt://user@h:1883 mqtt://user@h:1883");
    }

    #[test]
    fn destination_checks() {
        let destination = |value: serde_json::Value| serde_json::from_value::<MqttDestinationConfig>(value).unwrap();
        let ok = destination(json!({"url": "mqtt://h", "topic": "results/ingest"}));
        assert_eq!((ok.qos, ok.retain), (1, false));
        assert!(ok.validate().is_ok());
        for (value, key) in [
            (json!({"url": "mqtt://h", "topic": "a/+"}), "topic:"),
            (json!({"url": "mqtt://h", "topic": ""}), "topic:"),
            (json!({"url": "mqtt://h", "topic": "t", "qos": 0}), "qos:"),
            (json!({"url": "ftp://h", "topic": "t"}), "url:"),
        ] {
            let err = destination(value.clone()).validate().err().unwrap_or_else(|| panic!("accepted {value}"));
            assert!(err.to_string().contains(key), "{value}: {err}");
        }
    }
}
