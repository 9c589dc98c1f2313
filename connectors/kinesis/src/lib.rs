//! Switchyard's Amazon Kinesis Data Streams connector, on the AWS SDK for
//! Rust and tokio.
//!
//! - [`KinesisSource`]: reads every shard of one stream with GetRecords
//!   (shared throughput, not enhanced fan-out), one reader task per shard.
//!   Each record becomes a record in the shape of Lambda's Kinesis event,
//!   named by its sequence number (what `batchItemFailures[].itemIdentifier`
//!   names), with the shard id as its `scope` and the partition key as its
//!   `key`, so the engine keeps each shard in order.
//!   - Checkpoints: per shard, the acks feed an [`OffsetTracker`] over the
//!     shard's read order; when the highest contiguous finished record
//!     moves, its sequence number is saved in a [`CheckpointStore`] (at most
//!     every 100 ms per shard, and at shutdown). A reader starts
//!     AFTER_SEQUENCE_NUMBER of its shard's checkpoint, else at
//!     `starting_position` (TRIM_HORIZON, LATEST, AT_TIMESTAMP).
//!   - `Retry` (or a dropped ack) rewinds the shard: what was read after the
//!     record is forgotten, acks of its earlier delivery are ignored (an
//!     epoch per rewind), and the shard is read again AT_SEQUENCE_NUMBER of
//!     the retried record, so it comes back first and in order.
//!   - `Reject` counts as finished: Kinesis has no dead-lettering of its
//!     own (use the mapping's `on_failure`).
//!   - Resharding: the shard list is read again every
//!     `shard_discovery_interval` (10 s) and whenever a shard was finished. A
//!     child shard starts only once each parent was read to its end (no next
//!     iterator) and every parent record was finished and [`SHARD_END`]
//!     saved; it then starts at TRIM_HORIZON (AT_TIMESTAMP with a timestamp
//!     start). With a `latest` start, a shard that was already closed before
//!     the mapping first read it is skipped, and its children start at LATEST.
//!   - At most 5 GetRecords calls a second per shard (`poll_interval`,
//!     default 1 s when caught up; 200 ms apart while behind), at most
//!     10,000 records of a shard read and not finished
//!     ([`KinesisSource::with_max_in_flight`]), and the engine's bounded
//!     channel is waited on before a record is handed out.
//!   - Throttling (ProvisionedThroughputExceeded and the like) backs off
//!     quietly; an unreachable endpoint or a missing stream shows as
//!     `SourceState::Disconnected` naming the stream, and every request is
//!     retried with backoff (1 s doubling to 30 s) until shutdown.
//!   - On shutdown the readers stop, wait up to 10 s for the acks of what
//!     they handed out, save the last checkpoint and return. Records not
//!     finished by then are read again by the next run (at least once).
//! - [`KinesisEnvelope`]: `{"Records": [...]}`, and `KinesisBatchInfo` for
//!   on-failure records.
//! - [`KinesisDestination`]: PutRecords in chunks of 500 records or 5 MiB,
//!   in order; only the records Kinesis failed are written again (three more
//!   tries), then the send fails naming their error codes. A record over
//!   1 MiB (with its partition key) is refused before anything is sent. The
//!   partition key is `partition_key`, or by default a hash of the record,
//!   so records spread over the shards.
//!
//! # Where requests go, and as whom
//!
//! Credentials come from the standard AWS chain (environment, profile files,
//! web identity, ECS and EC2 metadata). The region is `region` when set, else
//! the one in `stream_arn`, else the chain's, else `us-east-1`. The endpoint
//! is `endpoint_url` when set, else `AWS_ENDPOINT_URL` or a profile's
//! `endpoint_url`, else AWS's for the region. Requests name the stream by
//! name, so a stream of another account cannot be read. HTTPS goes through
//! rustls with ring and the system's trust store, like the rest of the
//! workspace, instead of the SDK's default aws-lc-rs.
//!
//! # The event, and where it departs from Lambda's
//!
//! Each record is `kinesis {kinesisSchemaVersion, partitionKey,
//! sequenceNumber, data (base64), approximateArrivalTimestamp (epoch seconds
//! with milliseconds)}, eventSource ("aws:kinesis"), eventVersion, eventID
//! (<shardId>:<sequenceNumber>), eventName ("aws:kinesis:record"),
//! invokeIdentityArn, awsRegion, eventSourceARN`, as in Lambda's documented
//! example. Departures:
//! - `invokeIdentityArn` is `arn:aws:iam::<account>:role/switchyard`:
//!   Switchyard does not assume an IAM role to invoke, so it names one.
//! - Records aggregated by the Kinesis Producer Library are passed as they
//!   are stored, as Lambda does; the function de-aggregates them.
//! - Filters and transforms see the record as it is (`kinesis.data` stays
//!   base64): the SDK's payload fields name top-level keys only.
//! - A `latest` start saves no checkpoint until a record was finished: a
//!   restart before that starts at LATEST again.

mod checkpoint;
mod client;
mod config;
mod destination;
mod envelope;
mod error;
mod shard;
mod source;

pub use checkpoint::{CheckpointStore, FileCheckpoints, MemoryCheckpoints, SHARD_END};
pub use config::{
    DEFAULT_POLL_INTERVAL, DEFAULT_SHARD_DISCOVERY_INTERVAL, KinesisDestinationConfig, KinesisSourceConfig,
    MIN_POLL_INTERVAL, StartingPosition,
};
pub use destination::{KinesisDestination, MAX_CALL_BYTES, MAX_CALL_RECORDS, MAX_RECORD_BYTES};
pub use envelope::{INVOKE_ROLE, KinesisEnvelope, StreamInfo, created_at, record_data};
pub use source::{DEFAULT_MAX_IN_FLIGHT, KinesisSource};
#[doc(no_inline)]
pub use switchyard_sdk::OffsetTracker;
