//! The SDK client, on the settings every AWS connector shares
//! (switchyard-aws).

use aws_sdk_kinesis::Client;
use switchyard_aws::ClientSettings;

use crate::config::StreamName;

/// A client, and the region it signs for.
pub(crate) struct Connected {
    pub(crate) client: Client,
    pub(crate) region: String,
}

/// A client for `stream`: the region is `region` when set, else the one in
/// the stream ARN, else the chain's, else us-east-1; the endpoint is
/// `endpoint_url` when set, else the chain's (`AWS_ENDPOINT_URL`), else AWS's.
pub(crate) async fn connect(settings: &ClientSettings, stream: &StreamName) -> Connected {
    let (shared, region) = settings.load(stream.region.as_deref()).await;
    Connected { client: Client::new(&shared), region }
}
