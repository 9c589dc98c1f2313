use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use switchyard_sdk::{ConnectorError, Destination};

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `{ http: { url, timeout, headers } }` as a destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpDestinationConfig {
    pub url: String,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Extra request headers (for an authorization token from `${ENV}`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// POSTs each record as `application/json`.
pub struct HttpDestination {
    client: reqwest::Client,
    url: reqwest::Url,
    timeout: Duration,
    headers: reqwest::header::HeaderMap,
}

impl HttpDestination {
    pub fn new(client: reqwest::Client, config: &HttpDestinationConfig) -> Result<Self, ConnectorError> {
        let url = reqwest::Url::parse(&config.url)
            .map_err(|e| ConnectorError::Config(format!("url: {e}: expected an absolute http(s) URL")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConnectorError::Config(format!("url: scheme {:?}: expected http or https", url.scheme())));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &config.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ConnectorError::Config(format!("headers: {name:?} is not a valid header name")))?;
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| ConnectorError::Config(format!("headers.{name}: not a valid header value")))?;
            headers.insert(name, value);
        }
        Ok(Self { client, url, timeout: config.timeout, headers })
    }
}

#[async_trait]
impl Destination for HttpDestination {
    fn kind(&self) -> &'static str {
        "http"
    }

    async fn send(&self, records: &[Bytes]) -> Result<(), ConnectorError> {
        for record in records {
            let response = self
                .client
                .post(self.url.clone())
                .timeout(self.timeout)
                .headers(self.headers.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(record.clone())
                .send()
                .await
                .map_err(|e| ConnectorError::Connection(format!("POST {}: {e}", self.url)))?;
            let status = response.status();
            if status.is_success() {
                continue;
            }
            let text = format!("POST {} answered {status}", self.url);
            return Err(if status.as_u16() == 429 || status.is_server_error() {
                ConnectorError::Unavailable(text)
            } else {
                ConnectorError::Refused(text)
            });
        }
        Ok(())
    }
}
