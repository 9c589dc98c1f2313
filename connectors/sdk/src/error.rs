/// An error at a connector's boundary.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The peer could not be reached, or the connection broke. Retriable.
    #[error("connection failed: {0}")]
    Connection(String),
    /// The peer answered and refused (bad credentials, unknown queue, 4xx).
    #[error("refused by the peer: {0}")]
    Refused(String),
    /// The peer answered with a temporary failure (5xx, throttled). Retriable.
    #[error("temporary failure: {0}")]
    Unavailable(String),
    /// The connector's own configuration is wrong.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl ConnectorError {
    /// A fixed label for metrics.
    pub fn error_type(&self) -> &'static str {
        match self {
            ConnectorError::Connection(_) => "connection",
            ConnectorError::Refused(_) => "refused",
            ConnectorError::Unavailable(_) => "unavailable",
            ConnectorError::Config(_) => "config",
        }
    }

    pub fn is_retriable(&self) -> bool {
        matches!(self, ConnectorError::Connection(_) | ConnectorError::Unavailable(_))
    }
}
