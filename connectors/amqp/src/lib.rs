//! Switchyard's RabbitMQ (AMQP 0-9-1) connector, on lapin 4 and tokio.
//!
//! - [`RabbitMqSource`]: consumes one existing queue with manual
//!   acknowledgements and a prefetch limit. Each message becomes a record in
//!   the shape of Lambda's Amazon MQ for RabbitMQ event; `Delivered` acks it,
//!   `Retry` (or a dropped ack) nacks it with requeue, `Reject` rejects it
//!   without requeue so the queue's dead-letter exchange takes it. Records
//!   make no ordering promise (`scope: None`): requeued messages come back
//!   later. A missing queue, refused credentials or a lost connection show as
//!   `SourceState::Disconnected` with the reason, and the source reconnects
//!   with backoff (1 s doubling to 30 s) until shutdown.
//! - [`RabbitMqEnvelope`]: the event around a batch,
//!   `{"eventSource":"aws:rmq","eventSourceArn":...,"rmqMessagesByQueue":{"<queue>::<vhost>":[...]}}`.
//! - [`RabbitMqDestination`]: publishes each record as a persistent JSON
//!   message on a confirm-mode channel and succeeds once every message was
//!   confirmed.
//!
//! # The event, and where it departs from Lambda's
//!
//! Each message is `{"basicProperties": {...}, "redelivered": bool, "data":
//! "<base64 body>"}` with all fifteen properties Lambda lists, `null` when
//! absent, as in Lambda's documented example. Known differences:
//!
//! - `eventSourceArn` is made up: `arn:aws:mq:us-east-1:000000000000:broker:switchyard:<host>`.
//! - `timestamp` is written the way the example shows it (Java's medium date
//!   format in UTC, `"Jan 1, 1970, 12:33:41 AM"`, with a plain space before
//!   AM/PM); header timestamps are written the same way.
//! - Text header values are `{"bytes": [...]}` as in the example, with byte
//!   values 0..=255 as the Kafka connector writes them. Lambda's poller is
//!   Java and likely writes bytes above 127 as negative numbers; the example
//!   only shows ASCII, where both agree.
//! - Header types the example does not show are written as their JSON
//!   equivalent: booleans and numbers as they are, decimals as numbers, tables
//!   as objects, arrays as arrays, byte arrays as a plain array of bytes,
//!   void as `null`.
//! - `bodySize` is the body's length (the example's 80 does not match its
//!   own 43-byte body).
//!
//! Quorum queues add an `x-delivery-count` header on redeliveries; it is a
//! header like any other.

mod config;
mod destination;
mod envelope;
mod error;
mod source;

pub use config::{DEFAULT_PREFETCH, RabbitMqDestinationConfig, RabbitMqSourceConfig};
pub use destination::RabbitMqDestination;
pub use envelope::{RabbitMqEnvelope, broker_arn, created_at, message_data};
pub use source::RabbitMqSource;
