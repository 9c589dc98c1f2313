//! Switchyard's Kafka connector.
//!
//! - [`KafkaSource`]: a consumer-group source. Each message becomes a record
//!   in the shape of Lambda's self-managed Kafka event; a partition's offset is
//!   stored only once every record before it was acknowledged, and a `Retry`
//!   rewinds the partition to that record.
//! - [`KafkaEnvelope`]: the event around a batch
//!   (`{"eventSource":"SelfManagedKafka","records":{"<topic>-<partition>":[...]}}`)
//!   and the partial-batch item identifiers functions send back.
//! - [`KafkaDestination`]: an idempotent producer that succeeds once every
//!   record was written to all in-sync replicas.

mod config;
mod context;
mod destination;
mod envelope;
mod source;

pub use config::{KafkaDestinationConfig, KafkaSourceConfig, StartingPosition};
pub use destination::{KafkaDestination, KeyedRecord};
pub use envelope::{KafkaEnvelope, record_data, record_id};
pub use source::KafkaSource;
