//! Reference sources on in-memory brokers.
//!
//! They are what the kit's own tests run, and a model for connector authors of
//! the two acknowledgement styles the SDK supports:
//! - [`MemoryQueueSource`] settles each message from its `Ack` (SQS, RabbitMQ,
//!   NATS, MQTT);
//! - [`MemoryLogSource`] feeds the outcomes into an
//!   [`OffsetTracker`](switchyard_sdk::OffsetTracker) and commits its
//!   checkpoint (Kafka, Kinesis).

mod log;
mod queue;

pub use log::{LogEntry, MemoryLog, MemoryLogFixture, MemoryLogSource, value};
pub use queue::{Delivery, MemoryQueue, MemoryQueueFixture, MemoryQueueSource, QueueConsumer, body};
