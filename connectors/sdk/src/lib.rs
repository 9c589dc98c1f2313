//! The types and traits every Switchyard connector implements.
//!
//! A source turns what a broker or caller hands it into [`Record`]s. Each record
//! carries its own [`Ack`]: the engine completes it with an [`Outcome`] once the
//! function succeeded or the record reached its failure destination, and a record
//! whose `Ack` is dropped without an outcome is reported as [`Outcome::Retry`], so
//! an acknowledgement can be late but never forgotten.
//!
//! Two acknowledgement models are built on that one handle:
//! - per-message sources (RabbitMQ, SQS, NATS, MQTT) ack or release each message
//!   from the callback of its `Ack` (see [`Ack::channel`]);
//! - ordered sources (Kafka, Kinesis) feed the outcomes into an [`OffsetTracker`],
//!   which only ever advances the checkpoint to the highest contiguous finished
//!   offset.

mod ack;
mod backoff;
mod checkpoint;
mod chunk;
mod error;
mod payload;
mod reads;
mod record;
mod source;

pub use ack::{Ack, Outcome};
pub use backoff::Backoff;
pub use checkpoint::OffsetTracker;
pub use chunk::chunks;
pub use error::ConnectorError;
pub use payload::{Encoding, PayloadField, payload_value};
pub use reads::Reads;
pub use record::{
    Batch, Deferred, Envelope, Record, RecordsEnvelope, SingleEnvelope, deferred_as, object, write_base64, write_json,
    write_list, write_records, write_str,
};
pub use source::{Destination, Source, SourceContext, SourceState, set_state};
