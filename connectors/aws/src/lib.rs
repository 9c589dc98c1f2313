//! What Switchyard's AWS connectors share: the `endpoint_url` and `region`
//! settings every one of them takes, the SDK configuration they build from
//! them, and batch calls that send again only the entries that failed.
//!
//! Credentials come from the standard AWS chain (environment, profile files,
//! web identity, ECS and EC2 metadata; SSO profiles are not built in). HTTPS
//! goes through rustls with ring and the system's trust store, like the rest
//! of the workspace, instead of the SDK's default aws-lc-rs.

mod entries;

pub use entries::{FailedEntry, RETRY_WAITS, Target, send_entries};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use switchyard_sdk::ConnectorError;

/// The region when neither the config, the resource nor the AWS chain names
/// one: AWS-compatible servers (moto, LocalStack) accept any region, and
/// signing needs one.
pub const FALLBACK_REGION: &str = "us-east-1";

/// Where and as whom an SDK client talks: the checked `endpoint_url` and
/// `region` of a source or destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSettings {
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
}

impl ClientSettings {
    /// Checks the two keys; `""` (what `${AWS_ENDPOINT_URL:-}` becomes when
    /// unset) means not set.
    pub fn parse(endpoint_url: Option<&str>, region: Option<&str>) -> Result<Self, ConnectorError> {
        let endpoint_url = endpoint_url.map(str::trim).filter(|e| !e.is_empty());
        if let Some(endpoint) = endpoint_url {
            let parsed = url::Url::parse(endpoint)
                .map_err(|e| ConnectorError::Config(format!("endpoint_url: expected http(s)://host[:port]: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                return Err(ConnectorError::Config(format!(
                    "endpoint_url: expected http(s)://host[:port], got {endpoint:?}"
                )));
            }
        }
        let region = region.map(str::trim).filter(|r| !r.is_empty());
        if let Some(region) = region
            && !region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(ConnectorError::Config(format!("region: expected a name like us-east-1, got {region:?}")));
        }
        Ok(Self { endpoint_url: endpoint_url.map(str::to_string), region: region.map(str::to_string) })
    }

    /// The shared SDK configuration, and the region it signs for: `region`
    /// when set, else `resource_region` (the one in a queue URL or stream
    /// ARN), else the chain's, else [`FALLBACK_REGION`]. The endpoint is
    /// `endpoint_url` when set, else the chain's (`AWS_ENDPOINT_URL`), else
    /// AWS's for the region.
    pub async fn load(&self, resource_region: Option<&str>) -> (SdkConfig, String) {
        let http =
            aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
        if let Some(region) = self.region.as_deref().or(resource_region) {
            loader = loader.region(Region::new(region.to_string()));
        }
        if let Some(endpoint) = &self.endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        let shared = loader.load().await;
        match shared.region() {
            Some(region) => {
                let region = region.to_string();
                (shared, region)
            }
            None => {
                tracing::debug!("no AWS region configured; signing for {FALLBACK_REGION}");
                (shared.into_builder().region(Region::new(FALLBACK_REGION)).build(), FALLBACK_REGION.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_and_blank_means_unset() {
        let settings = ClientSettings::parse(Some("http://127.0.0.1:4566"), Some("eu-west-1")).unwrap();
        assert_eq!(settings.endpoint_url.as_deref(), Some("http://127.0.0.1:4566"));
        assert_eq!(ClientSettings::parse(Some(" "), Some("")).unwrap(), ClientSettings::default());
        let bad = ClientSettings::parse(Some("ftp://h"), None).unwrap_err().to_string();
        assert!(bad.contains("endpoint_url"), "{bad}");
        let bad = ClientSettings::parse(None, Some("us east")).unwrap_err().to_string();
        assert!(bad.contains("region"), "{bad}");
    }

    #[tokio::test]
    async fn the_region_falls_back_in_order() {
        let explicit = ClientSettings { region: Some("eu-west-1".into()), ..Default::default() };
        assert_eq!(explicit.load(Some("ap-south-1")).await.1, "eu-west-1");
        let from_resource = ClientSettings::default();
        assert_eq!(from_resource.load(Some("ap-south-1")).await.1, "ap-south-1");
    }
}
