//! The SDK client: credentials and region from the standard AWS chain, the
//! configured overrides, and an HTTPS client on rustls with ring.

use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::Client;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

use crate::config::{ClientSettings, QueueUrl, is_aws_host};

/// The region when neither the config, the queue URL nor the AWS chain names
/// one: SQS-compatible servers accept any region, and signing needs one.
const FALLBACK_REGION: &str = "us-east-1";

/// A connected client: where it sends requests, and as what region.
pub(crate) struct Connected {
    pub(crate) client: Client,
    pub(crate) region: String,
    /// `None`: AWS's endpoint for the region.
    pub(crate) endpoint: Option<String>,
}

impl Connected {
    /// Whether requests go to a server that is not AWS.
    pub(crate) fn emulated(&self) -> bool {
        self.endpoint
            .as_deref()
            .and_then(|e| url::Url::parse(e).ok())
            .and_then(|u| u.host_str().map(|h| !is_aws_host(h)))
            .unwrap_or(false)
    }
}

/// A client for `queue`.
pub(crate) async fn connect(settings: &ClientSettings, queue: &QueueUrl) -> Connected {
    let http = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    // A queue URL on AWS only works with the region in its host name, so
    // that wins over the environment.
    if let Some(region) = settings.region.as_ref().or(queue.region.as_ref()) {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &settings.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    let shared = loader.load().await;
    let mut builder = aws_sdk_sqs::config::Builder::from(&shared);
    let region = match shared.region() {
        Some(region) => region.to_string(),
        None => {
            tracing::debug!(queue = %queue.url, "no AWS region configured; signing for {FALLBACK_REGION}");
            builder = builder.region(Region::new(FALLBACK_REGION));
            FALLBACK_REGION.to_string()
        }
    };
    // Without an endpoint from the config or the environment (AWS_ENDPOINT_URL),
    // the SDK would send requests for a moto or LocalStack queue to AWS.
    let mut endpoint = shared.endpoint_url().map(str::to_string);
    if endpoint.is_none()
        && let Some(origin) = &queue.origin
    {
        builder = builder.endpoint_url(origin);
        endpoint = Some(origin.clone());
    }
    Connected { client: Client::from_conf(builder.build()), region, endpoint }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connected(endpoint: Option<&str>) -> Connected {
        let config = aws_sdk_sqs::Config::builder().behavior_version(BehaviorVersion::latest()).build();
        Connected { client: Client::from_conf(config), region: "us-east-1".into(), endpoint: endpoint.map(Into::into) }
    }

    #[test]
    fn servers_that_are_not_aws_are_emulated() {
        assert!(connected(Some("http://127.0.0.1:4566")).emulated());
        assert!(!connected(Some("https://sqs.us-east-1.amazonaws.com")).emulated());
        assert!(!connected(None).emulated(), "no endpoint is AWS's");
    }
}
