//! Where results and failures go: a connector that can send (HTTP, Kafka),
//! an asynchronous invocation of another function, or the embedded
//! dead-letter store.

use switchyard_http::HttpDestination;
use switchyard_sdk::Destination;

use crate::config::DestinationConfig;

pub enum Target {
    /// A connector; a send succeeds once the peer confirmed.
    Send(Box<dyn Destination>),
    /// An async invocation of the named function, queued durably.
    Function(String),
    /// The embedded dead-letter store.
    DeadLetters,
    /// Back to the broker, rejected without requeue, for its own dead-lettering
    /// (a RabbitMQ queue's dead-letter exchange).
    Reject,
}

impl Target {
    /// A fixed label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Send(d) => d.kind(),
            Target::Function(_) => "function",
            Target::DeadLetters => "dlq",
            Target::Reject => "reject",
        }
    }
}

pub fn target(config: &DestinationConfig, client: &reqwest::Client) -> anyhow::Result<Target> {
    Ok(match config {
        DestinationConfig::Http(http) => Target::Send(Box::new(HttpDestination::new(client.clone(), http)?)),
        DestinationConfig::Function(f) => Target::Function(f.name.clone()),
        DestinationConfig::Dlq(_) => Target::DeadLetters,
        #[cfg(feature = "kafka")]
        DestinationConfig::Kafka(kafka) => Target::Send(Box::new(switchyard_kafka::KafkaDestination::new(kafka)?)),
        #[cfg(feature = "rabbitmq")]
        DestinationConfig::Rabbitmq(rabbit) => {
            Target::Send(Box::new(switchyard_amqp::RabbitMqDestination::new(rabbit)?))
        }
        #[cfg(feature = "sqs")]
        DestinationConfig::Sqs(sqs) => Target::Send(Box::new(switchyard_sqs::SqsDestination::new(sqs)?)),
        #[cfg(feature = "kinesis")]
        DestinationConfig::Kinesis(kinesis) => {
            Target::Send(Box::new(switchyard_kinesis::KinesisDestination::new(kinesis)?))
        }
        #[cfg(feature = "mqtt")]
        DestinationConfig::Mqtt(mqtt) => Target::Send(Box::new(switchyard_mqtt::MqttDestination::new(mqtt)?)),
        #[cfg(feature = "nats")]
        DestinationConfig::Nats(nats) => Target::Send(Box::new(switchyard_nats::NatsDestination::new(nats)?)),
    })
}
