//! The SDK client: the shared AWS settings (switchyard-aws), and the queue
//! URL's own server when it is not AWS's.

use aws_sdk_sqs::Client;
use switchyard_aws::ClientSettings;

use crate::config::{QueueUrl, is_aws_host};

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

/// A client for `queue`: the region is `region` when set, else the one in
/// an AWS queue URL's host (a queue URL on AWS only works with it), else the
/// chain's, else us-east-1.
pub(crate) async fn connect(settings: &ClientSettings, queue: &QueueUrl) -> Connected {
    let (shared, region) = settings.load(queue.region.as_deref()).await;
    let mut builder = aws_sdk_sqs::config::Builder::from(&shared);
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
    use aws_sdk_sqs::config::BehaviorVersion;

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
