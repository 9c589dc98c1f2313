//! What lapin's errors mean for a source's state and a destination's retries.

use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::{Error, ErrorKind};
use switchyard_sdk::ConnectorError;

use crate::config::Endpoint;

/// What was being done when an error happened, so the reason can name what
/// is missing or refused.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step<'a> {
    Connect,
    Queue(&'a str),
    /// Reading deliveries from the queue's consumer.
    Consume(&'a str),
    Exchange(&'a str),
    Other(&'a str),
}

/// A sentence for `SourceState::Disconnected` and logs: names the queue, the
/// user or the address, never the password.
pub(crate) fn describe(error: &Error, step: Step<'_>, endpoint: &Endpoint) -> String {
    let (user, vhost) = (endpoint.user(), endpoint.vhost());
    if let ErrorKind::ProtocolError(amqp) = error.kind() {
        let message = amqp.get_message().as_str();
        match (amqp.kind(), step) {
            (AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND), Step::Queue(queue)) => {
                return format!("queue {queue:?} not found in vhost {vhost:?} on {endpoint} ({message})");
            }
            (AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND), Step::Exchange(exchange)) => {
                return format!("exchange {exchange:?} not found in vhost {vhost:?} on {endpoint} ({message})");
            }
            (AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED), Step::Connect) => {
                return format!("RabbitMQ at {endpoint} refused the login of user {user:?} ({message})");
            }
            (AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED), Step::Queue(queue)) => {
                return format!("user {user:?} may not read queue {queue:?} in vhost {vhost:?} ({message})");
            }
            (AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED), Step::Exchange(exchange)) => {
                return format!(
                    "user {user:?} may not publish to exchange {exchange:?} in vhost {vhost:?} ({message})"
                );
            }
            (AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED), Step::Connect) => {
                return format!("vhost {vhost:?} does not exist or user {user:?} may not use it ({message})");
            }
            _ => {}
        }
    }
    match step {
        Step::Connect if error.is_io_error() => format!("cannot reach RabbitMQ at {endpoint}: {error}"),
        Step::Connect => format!("connecting to {endpoint} as user {user:?}: {error}"),
        Step::Queue(queue) => format!("queue {queue:?} on {endpoint}: {error}"),
        Step::Consume(queue) if error.is_io_error() || error.is_amqp_hard_error() => {
            format!("lost the connection to {endpoint} while consuming queue {queue:?}: {error}")
        }
        Step::Consume(queue) => format!("consuming queue {queue:?} on {endpoint}: {error}"),
        Step::Exchange(exchange) => format!("exchange {exchange:?} on {endpoint}: {error}"),
        Step::Other(what) => format!("{what} on {endpoint}: {error}"),
    }
}

/// Lost or unusable connections and the broker's own trouble are retriable;
/// what the broker refuses (credentials, permissions, a missing exchange) is
/// not until someone changes the broker or the config.
pub(crate) fn classify(error: &Error, text: String) -> ConnectorError {
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(
                AMQPSoftError::ACCESSREFUSED
                | AMQPSoftError::NOTFOUND
                | AMQPSoftError::PRECONDITIONFAILED
                | AMQPSoftError::CONTENTTOOLARGE
                | AMQPSoftError::NOROUTE,
            )
            | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED | AMQPHardError::INVALIDPATH) => {
                ConnectorError::Refused(text)
            }
            AMQPErrorKind::Hard(AMQPHardError::CONNECTIONFORCED) => ConnectorError::Connection(text),
            _ => ConnectorError::Unavailable(text),
        },
        ErrorKind::IOError(_)
        | ErrorKind::InvalidConnectionState(_)
        | ErrorKind::InvalidChannelState(..)
        | ErrorKind::InvalidChannel(_)
        | ErrorKind::MissingHeartbeatError => ConnectorError::Connection(text),
        _ => ConnectorError::Unavailable(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::protocol::AMQPError;

    fn endpoint() -> Endpoint {
        Endpoint::parse("url", "amqp://alice:secret@mq:5672/%2f").unwrap()
    }

    fn amqp(kind: AMQPErrorKind) -> Error {
        ErrorKind::ProtocolError(AMQPError::new(kind, "broker says no".into())).into()
    }

    #[test]
    fn reasons_name_the_queue_or_the_user() {
        let missing = describe(&amqp(AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)), Step::Queue("orders"), &endpoint());
        assert!(missing.contains("queue \"orders\" not found"), "{missing}");
        let login = describe(&amqp(AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)), Step::Connect, &endpoint());
        assert!(login.contains("user \"alice\"") && !login.contains("secret"), "{login}");
        let io: Error = std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        let unreachable = describe(&io, Step::Connect, &endpoint());
        assert!(unreachable.starts_with("cannot reach RabbitMQ at amqp://alice@mq:5672/%2f"), "{unreachable}");
    }

    #[test]
    fn refusals_are_not_retriable() {
        let refused = classify(&amqp(AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)), "x".into());
        assert!(matches!(refused, ConnectorError::Refused(_)));
        let io: Error = std::io::Error::from(std::io::ErrorKind::ConnectionReset).into();
        assert!(classify(&io, "x".into()).is_retriable());
        assert!(classify(&amqp(AMQPErrorKind::Hard(AMQPHardError::INTERNALERROR)), "x".into()).is_retriable());
    }
}
