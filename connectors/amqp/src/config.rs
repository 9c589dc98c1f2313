//! The YAML shapes of the RabbitMQ source and destination, and the broker
//! address they share.

use std::fmt;
use std::str::FromStr;

use lapin::types::ShortString;
use lapin::uri::AMQPUri;
use serde::Deserialize;
use switchyard_sdk::ConnectorError;

/// Lambda's default batch size for Amazon MQ is 100: a prefetch of the same
/// size lets one full batch be in flight without waiting on the broker.
pub const DEFAULT_PREFETCH: u16 = 100;

/// AMQP short strings (queue, exchange and routing key names) hold at most
/// 255 bytes.
const MAX_NAME_BYTES: usize = 255;

/// `{ rabbitmq: { url, queue, prefetch } }` as a source.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitMqSourceConfig {
    /// `amqp://user:password@host:port/vhost` (`amqps://` for TLS); the
    /// default vhost `/` is written `%2f`.
    pub url: String,
    /// An existing queue: the source never declares or changes it.
    pub queue: String,
    /// The most messages the broker hands out unacknowledged (`basic.qos`).
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
}

/// `{ rabbitmq: { url, exchange, routing_key } }` as a destination.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitMqDestinationConfig {
    /// `amqp://user:password@host:port/vhost`, as for the source.
    pub url: String,
    /// `""` (or left out) is the default exchange, which routes to the queue
    /// named by `routing_key`.
    #[serde(default)]
    pub exchange: String,
    pub routing_key: String,
}

fn default_prefetch() -> u16 {
    DEFAULT_PREFETCH
}

// The URL carries the password: Debug shows it redacted, so a config can be
// logged.
impl fmt::Debug for RabbitMqSourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqSourceConfig")
            .field("url", &redact(&self.url))
            .field("queue", &self.queue)
            .field("prefetch", &self.prefetch)
            .finish()
    }
}

impl fmt::Debug for RabbitMqDestinationConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqDestinationConfig")
            .field("url", &redact(&self.url))
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing_key)
            .finish()
    }
}

impl RabbitMqSourceConfig {
    /// Checks what serde cannot: the URL, the queue name and the prefetch.
    pub(crate) fn validate(&self) -> Result<(Endpoint, ShortString), ConnectorError> {
        let endpoint = Endpoint::parse("url", &self.url)?;
        if self.queue.is_empty() {
            return Err(ConnectorError::Config("queue: must not be empty".into()));
        }
        let queue = name("queue", &self.queue)?;
        // 0 means "unlimited" to the broker: memory would follow the backlog.
        if self.prefetch == 0 {
            return Err(ConnectorError::Config("prefetch: must be at least 1".into()));
        }
        Ok((endpoint, queue))
    }
}

impl RabbitMqDestinationConfig {
    pub(crate) fn validate(&self) -> Result<(Endpoint, ShortString, ShortString), ConnectorError> {
        let endpoint = Endpoint::parse("url", &self.url)?;
        Ok((endpoint, name("exchange", &self.exchange)?, name("routing_key", &self.routing_key)?))
    }
}

fn name(key: &str, value: &str) -> Result<ShortString, ConnectorError> {
    if value.len() > MAX_NAME_BYTES {
        return Err(ConnectorError::Config(format!("{key}: at most {MAX_NAME_BYTES} bytes, got {}", value.len())));
    }
    ShortString::try_new(value).map_err(|e| ConnectorError::Config(format!("{key}: {e}")))
}

/// A parsed broker URL.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(crate) uri: AMQPUri,
}

impl Endpoint {
    pub(crate) fn parse(key: &str, url: &str) -> Result<Self, ConnectorError> {
        let invalid = |why: String| {
            // The parser may quote the URL back, password included.
            let why = why.replace(url, &redact(url));
            ConnectorError::Config(format!("{key}: expected amqp://user:password@host:port/vhost: {why}"))
        };
        let mut uri = AMQPUri::from_str(url).map_err(invalid)?;
        let parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
        match parsed.host() {
            // amq-protocol-uri only takes domain names (an IPv4 address is one
            // for a non-special scheme); an IPv6 literal would silently become
            // its default, localhost.
            Some(url::Host::Ipv6(address)) => uri.authority.host = address.to_string(),
            Some(_) => {}
            None => return Err(invalid("no host".into())),
        }
        Ok(Self { uri })
    }

    pub(crate) fn host(&self) -> &str {
        &self.uri.authority.host
    }

    pub(crate) fn vhost(&self) -> &str {
        &self.uri.vhost
    }

    pub(crate) fn user(&self) -> &str {
        &self.uri.authority.userinfo.username
    }
}

/// `amqp://user@host:port/vhost`: the URL without its password, for logs and
/// states.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let authority = &self.uri.authority;
        let host = if authority.host.contains(':') { format!("[{}]", authority.host) } else { authority.host.clone() };
        let vhost = if self.uri.vhost == "/" { "%2f" } else { &self.uri.vhost };
        write!(f, "{}://{}@{}:{}/{}", self.uri.scheme, authority.userinfo.username, host, authority.port, vhost)
    }
}

/// The URL with the password replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
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

    fn source(value: serde_json::Value) -> Result<RabbitMqSourceConfig, serde_json::Error> {
        serde_json::from_value(value)
    }

    #[test]
    fn source_defaults_and_unknown_fields() {
        let config = source(json!({"url": "amqp://guest:guest@127.0.0.1:5672/%2f", "queue": "orders"})).unwrap();
        assert_eq!(config.prefetch, DEFAULT_PREFETCH);
        let (endpoint, queue) = config.validate().unwrap();
        assert_eq!(queue.as_str(), "orders");
        assert_eq!((endpoint.host(), endpoint.vhost(), endpoint.user()), ("127.0.0.1", "/", "guest"));
        assert_eq!(endpoint.to_string(), "amqp://guest@127.0.0.1:5672/%2f");

        let err = source(json!({"url": "amqp://h", "queue": "q", "requeue": true})).unwrap_err();
        assert!(err.to_string().contains("unknown field `requeue`"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_by_key() {
        let cases = [
            (json!({"url": "http://h/", "queue": "q"}), "url:"),
            (json!({"url": "not a url", "queue": "q"}), "url:"),
            (json!({"url": "amqp://h/%2f", "queue": ""}), "queue:"),
            (json!({"url": "amqp://h/%2f", "queue": "x".repeat(256)}), "queue:"),
            (json!({"url": "amqp://h/%2f", "queue": "q", "prefetch": 0}), "prefetch:"),
        ];
        for (value, key) in cases {
            let err = source(value.clone()).unwrap().validate().err().unwrap_or_else(|| panic!("accepted {value}"));
            assert!(err.to_string().contains(key), "{value}: {err}");
        }
    }

    #[test]
    fn hosts_vhosts_and_tls() {
        let endpoint = Endpoint::parse("url", "amqps://u:p@[::1]:5671/orders").unwrap();
        assert_eq!((endpoint.host(), endpoint.vhost()), ("::1", "orders"));
        assert_eq!(endpoint.to_string(), "amqps://u@[::1]:5671/orders");
        let endpoint = Endpoint::parse("url", "amqp://mq.example:5672").unwrap();
        assert_eq!((endpoint.host(), endpoint.vhost()), ("mq.example", "/"), "no path is the default vhost");
    }

    #[test]
    fn passwords_stay_out_of_debug_and_errors() {
        let config = RabbitMqDestinationConfig {
            url: "amqp://user:s3cret@h:5672/%2f".into(),
            exchange: String::new(),
            routing_key: "dlq".into(),
        };
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret") && debug.contains("user:***@h:5672/%2f"), "{debug}");
        let err = Endpoint::parse("url", "amqp://user:s3cret@h:notaport/").err().unwrap().to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn destination_exchange_defaults_to_the_default_exchange() {
        let config: RabbitMqDestinationConfig =
            serde_json::from_value(json!({"url": "amqp://h/%2f", "routing_key": "dlq"})).unwrap();
        let (_, exchange, routing_key) = config.validate().unwrap();
        assert_eq!((exchange.as_str(), routing_key.as_str()), ("", "dlq"));
    }
}
