//! The YAML shapes of the NATS source and destination, and the server
//! addresses they share.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_nats::{HeaderName, ServerAddr};
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use switchyard_sdk::ConnectorError;

/// JetStream's own default AckWait.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// JetStream's own default MaxAckPending.
pub const DEFAULT_MAX_ACK_PENDING: u32 = 1000;
/// The shortest `ack_wait` taken: the in-progress heartbeat runs every third
/// of it, and a shorter wait leaves no room for a round trip.
pub const MIN_ACK_WAIT: Duration = Duration::from_secs(1);
/// A sanity bound: every unacknowledged message is held in memory.
pub const MAX_MAX_ACK_PENDING: u32 = 100_000;

/// `{ nats: { url, stream, consumer, subjects, create_stream, ordered, ack_wait, max_ack_pending } }`
/// as a source.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSourceConfig {
    /// `nats://host:4222`, `nats://user:password@host:4222`,
    /// `nats://token@host:4222` or `tls://...`; several servers of one
    /// cluster separated by commas.
    pub url: String,
    /// The JetStream stream to read.
    pub stream: String,
    /// The durable pull consumer's name; created if missing.
    pub consumer: String,
    /// The consumer's filter subjects (all of the stream's subjects when
    /// empty), and the stream's subjects when the source creates the stream.
    /// More than one needs nats-server 2.10 or later.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Create the stream (file storage, limits retention, `subjects`) when it
    /// does not exist. Off: a missing stream is an error the source reports
    /// and retries until someone creates it.
    #[serde(default)]
    pub create_stream: bool,
    /// One batch in flight per subject, in stream order (the record's scope is
    /// its subject). Off: records have no scope and run in parallel.
    #[serde(default)]
    pub ordered: bool,
    /// The consumer's AckWait: how long the server waits for an ack before it
    /// redelivers. The source sends in-progress acks every third of it while
    /// a record is being worked on.
    #[serde(default = "default_ack_wait", with = "humantime_serde")]
    pub ack_wait: Duration,
    /// The consumer's MaxAckPending: the most messages handed out and not
    /// acknowledged yet, which also bounds what the source holds.
    #[serde(default = "default_max_ack_pending")]
    pub max_ack_pending: u32,
}

/// `{ nats: { url, subject, headers } }` as a destination.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsDestinationConfig {
    /// As for the source.
    pub url: String,
    /// The subject every record is published to; a JetStream stream must
    /// capture it.
    pub subject: String,
    /// Headers added to every message.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_ack_wait() -> Duration {
    DEFAULT_ACK_WAIT
}

fn default_max_ack_pending() -> u32 {
    DEFAULT_MAX_ACK_PENDING
}

// The URL may carry a password or a token: Debug shows it redacted, so a
// config can be logged.
impl fmt::Debug for NatsSourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSourceConfig")
            .field("url", &redact_list(&self.url))
            .field("stream", &self.stream)
            .field("consumer", &self.consumer)
            .field("subjects", &self.subjects)
            .field("create_stream", &self.create_stream)
            .field("ordered", &self.ordered)
            .field("ack_wait", &self.ack_wait)
            .field("max_ack_pending", &self.max_ack_pending)
            .finish()
    }
}

impl fmt::Debug for NatsDestinationConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsDestinationConfig")
            .field("url", &redact_list(&self.url))
            .field("subject", &self.subject)
            .field("headers", &self.headers)
            .finish()
    }
}

impl NatsSourceConfig {
    /// Checks what serde cannot: the servers, names, subjects and limits.
    pub(crate) fn validate(&self) -> Result<Servers, ConnectorError> {
        let servers = Servers::parse("url", &self.url)?;
        name("stream", &self.stream)?;
        name("consumer", &self.consumer)?;
        for (i, subject) in self.subjects.iter().enumerate() {
            check_subject(&format!("subjects[{i}]"), subject, true)?;
        }
        if self.create_stream && self.subjects.is_empty() {
            return Err(ConnectorError::Config(
                "subjects: create_stream needs the subjects the new stream captures".into(),
            ));
        }
        if self.ack_wait < MIN_ACK_WAIT {
            return Err(ConnectorError::Config(format!(
                "ack_wait: at least {MIN_ACK_WAIT:?}, got {:?}",
                self.ack_wait
            )));
        }
        if !(1..=MAX_MAX_ACK_PENDING).contains(&self.max_ack_pending) {
            return Err(ConnectorError::Config(format!(
                "max_ack_pending: between 1 and {MAX_MAX_ACK_PENDING}, got {}",
                self.max_ack_pending
            )));
        }
        Ok(servers)
    }
}

impl NatsDestinationConfig {
    pub(crate) fn validate(&self) -> Result<Servers, ConnectorError> {
        let servers = Servers::parse("url", &self.url)?;
        // Publishing needs one concrete subject: wildcards only filter.
        check_subject("subject", &self.subject, false)?;
        for (header, value) in &self.headers {
            let key = format!("headers.{header}");
            // NATS headers are written like HTTP/1 headers: a name is visible
            // ASCII without ':', a value stays on one line.
            if header.is_empty() || header.parse::<HeaderName>().is_err() {
                return Err(ConnectorError::Config(format!("{key}: not a valid header name")));
            }
            if value.contains(['\r', '\n']) {
                return Err(ConnectorError::Config(format!("{key}: a value must not contain a line break")));
            }
        }
        Ok(servers)
    }
}

/// Stream and consumer names become subject tokens in the JetStream API:
/// no dots, wildcards, whitespace or path separators.
fn name(key: &str, value: &str) -> Result<(), ConnectorError> {
    if value.is_empty() {
        return Err(ConnectorError::Config(format!("{key}: must not be empty")));
    }
    if value.len() > 255 {
        return Err(ConnectorError::Config(format!("{key}: at most 255 bytes, got {}", value.len())));
    }
    if let Some(bad) = value.chars().find(|c| matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace()) {
        return Err(ConnectorError::Config(format!("{key}: {value:?} must not contain {bad:?}")));
    }
    Ok(())
}

/// A subject is dot-separated non-empty tokens without whitespace; `*`
/// stands for one whole token and `>` for the rest, only when
/// `wildcards` are allowed.
fn check_subject(key: &str, subject: &str, wildcards: bool) -> Result<(), ConnectorError> {
    let invalid = |why: &str| Err(ConnectorError::Config(format!("{key}: {subject:?} is not a valid subject: {why}")));
    if subject.is_empty() {
        return invalid("empty");
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return invalid("whitespace");
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        match *token {
            "" => return invalid("empty token"),
            "*" | ">" if !wildcards => return invalid("wildcards are not allowed here"),
            ">" if i + 1 != tokens.len() => return invalid("'>' must be the last token"),
            "*" | ">" => {}
            other if other.contains(['*', '>']) => return invalid("a wildcard must be a whole token"),
            _ => {}
        }
    }
    Ok(())
}

/// The parsed server list of a `url`, with the credentials it carries.
#[derive(Clone)]
pub(crate) struct Servers {
    pub(crate) addrs: Vec<ServerAddr>,
    pub(crate) auth: Auth,
    /// The URLs without secrets, for logs and states.
    shown: String,
}

/// Credentials written in the URL (async-nats does not read them there).
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Auth {
    None,
    UserPassword(String, String),
    Token(String),
}

impl Servers {
    pub(crate) fn parse(key: &str, text: &str) -> Result<Self, ConnectorError> {
        let mut addrs = Vec::new();
        let mut auth = Auth::None;
        for part in text.split(',').map(str::trim) {
            let invalid = |why: String| {
                // The parser may quote the URL back, secrets included.
                let why = why.replace(part, &redact(part));
                ConnectorError::Config(format!("{key}: expected nats://[user:password@]host:port: {why}"))
            };
            if part.is_empty() {
                return Err(invalid("empty server address".into()));
            }
            let addr: ServerAddr = part.parse().map_err(|e: std::io::Error| invalid(e.to_string()))?;
            if !matches!(addr.scheme(), "nats" | "tls") {
                return Err(invalid(format!("scheme {:?} is not supported (nats, tls)", addr.scheme())));
            }
            if addr.host().is_empty() {
                return Err(invalid("no host".into()));
            }
            let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
            let here = match (addr.username(), addr.password()) {
                (Some(user), Some(password)) => Auth::UserPassword(decode(user), decode(password)),
                (Some(token), None) => Auth::Token(decode(token)),
                _ => Auth::None,
            };
            if here != Auth::None {
                if auth != Auth::None && auth != here {
                    return Err(invalid("the servers carry different credentials".into()));
                }
                auth = here;
            }
            addrs.push(addr);
        }
        Ok(Self { addrs, auth, shown: redact_list(text) })
    }
}

/// `nats://user@host:4222`: the URLs without passwords or tokens.
impl fmt::Display for Servers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

fn redact_list(text: &str) -> String {
    text.split(',').map(|part| redact(part.trim())).collect::<Vec<_>>().join(",")
}

/// The URL with its password replaced by `***`, or its token when it has a
/// user part and no password.
fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}{user}:***@{host}{path}"),
        None => format!("{scheme}***@{host}{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn source(value: serde_json::Value) -> Result<NatsSourceConfig, serde_json::Error> {
        serde_json::from_value(value)
    }

    #[test]
    fn source_defaults_and_unknown_fields() {
        let config = source(json!({"url": "nats://127.0.0.1:4222", "stream": "ORDERS", "consumer": "c"})).unwrap();
        assert_eq!(config.ack_wait, DEFAULT_ACK_WAIT);
        assert_eq!(config.max_ack_pending, DEFAULT_MAX_ACK_PENDING);
        assert!(config.subjects.is_empty() && !config.ordered && !config.create_stream);
        let servers = config.validate().unwrap();
        assert_eq!(servers.addrs.len(), 1);
        assert!(servers.auth == Auth::None);

        let config = source(json!({
            "url": "nats://a:4222", "stream": "S", "consumer": "c", "subjects": ["orders.>"],
            "ack_wait": "2s", "max_ack_pending": 5, "ordered": true, "create_stream": true,
        }))
        .unwrap();
        assert_eq!((config.ack_wait, config.max_ack_pending), (Duration::from_secs(2), 5));
        config.validate().unwrap();

        let err = source(json!({"url": "nats://h", "stream": "S", "consumer": "c", "durable": true})).unwrap_err();
        assert!(err.to_string().contains("unknown field `durable`"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_by_key() {
        let base = json!({"url": "nats://h:4222", "stream": "S", "consumer": "c"});
        let with = |key: &str, value: serde_json::Value| {
            let mut config = base.clone();
            config[key] = value;
            config
        };
        let cases = [
            (with("url", json!("http://h/")), "url:"),
            (with("url", json!("nats://h:4222,")), "url:"),
            (with("url", json!("nats://a:b@h,nats://c:d@i")), "url:"),
            (with("stream", json!("")), "stream:"),
            (with("stream", json!("ORD.ERS")), "stream:"),
            (with("consumer", json!("a b")), "consumer:"),
            (with("subjects", json!(["orders..x"])), "subjects[0]:"),
            (with("subjects", json!(["ok", "orders.>.x"])), "subjects[1]:"),
            (with("subjects", json!(["orders.a*"])), "subjects[0]:"),
            (with("create_stream", json!(true)), "subjects:"),
            (with("ack_wait", json!("500ms")), "ack_wait:"),
            (with("max_ack_pending", json!(0)), "max_ack_pending:"),
        ];
        for (value, key) in cases {
            let err = source(value.clone()).unwrap().validate().err().unwrap_or_else(|| panic!("accepted {value}"));
            assert!(err.to_string().contains(key), "{value}: {err}");
        }
    }

    #[test]
    fn credentials_come_from_the_url_and_stay_out_of_logs() {
        let servers = Servers::parse("url", "nats://alice:s%40cret@h1:4222, nats://h2:4223").unwrap();
        assert!(servers.auth == Auth::UserPassword("alice".into(), "s@cret".into()));
        assert_eq!(servers.to_string(), "nats://alice:***@h1:4222,nats://h2:4223");
        let servers = Servers::parse("url", "tls://t0ken@h").unwrap();
        assert!(servers.auth == Auth::Token("t0ken".into()));
        assert_eq!(servers.to_string(), "tls://***@h");
        let servers = Servers::parse("url", "127.0.0.1:4222").unwrap();
        assert_eq!((servers.addrs[0].scheme(), servers.addrs[0].port()), ("nats", 4222));

        let config = NatsDestinationConfig {
            url: "nats://user:s3cret@h:4222".into(),
            subject: "dlq".into(),
            headers: BTreeMap::new(),
        };
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret") && debug.contains("user:***@h:4222"), "{debug}");
        let err = Servers::parse("url", "nats://user:s3cret@h:notaport").err().unwrap().to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn destination_subjects_and_headers() {
        let parse = |value: serde_json::Value| serde_json::from_value::<NatsDestinationConfig>(value).unwrap();
        parse(json!({"url": "nats://h", "subject": "orders.dead", "headers": {"X-Source": "switchyard"}}))
            .validate()
            .unwrap();
        for (value, key) in [
            (json!({"url": "nats://h", "subject": "orders.*"}), "subject:"),
            (json!({"url": "nats://h", "subject": "orders.>"}), "subject:"),
            (json!({"url": "nats://h", "subject": "a", "headers": {"Bad Name": "x"}}), "headers.Bad Name:"),
            (json!({"url": "nats://h", "subject": "a", "headers": {"X": "a\r\nb"}}), "headers.X:"),
        ] {
            let err = parse(value.clone()).validate().err().unwrap_or_else(|| panic!("accepted {value}"));
            assert!(err.to_string().contains(key), "{value}: {err}");
        }
    }
}
