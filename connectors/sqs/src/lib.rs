//! Switchyard's Amazon SQS connector, on the AWS SDK for Rust and tokio.
//!
//! - [`SqsSource`]: `max_concurrency` pollers long-poll one existing queue
//!   (ten messages a receive, all system and message attributes). Each
//!   message becomes a record in the shape of Lambda's SQS event, named by
//!   its `messageId` (what `batchItemFailures[].itemIdentifier` names).
//!   - `Delivered` deletes the message (DeleteMessageBatch, outcomes
//!     collected for up to 20 ms into calls of ten; entries SQS failed on its
//!     side are sent again, up to four tries).
//!   - `Retry` (or a dropped ack) makes the message of a standard queue
//!     visible again after a delay instead of the whole visibility timeout:
//!     1 s after its first receive, doubling with each receive
//!     (`ApproximateReceiveCount`), never longer than the visibility timeout
//!     (the engine retries failed invocations itself and only drops acks
//!     when it stops a lane, so the delay only guards against a hot loop).
//!     On a FIFO queue, and during shutdown, it is made visible at once: the
//!     engine retries the rest of the group with it, and the group starts
//!     over from it in order.
//!   - `Reject` makes the message visible at once when the queue has a
//!     redrive policy: SQS moves it to the dead-letter queue on the receive
//!     that finds its receive count above `maxReceiveCount` (with
//!     `maxReceiveCount` above 1 the function may see it again first).
//!     Without a redrive policy there is no dead-lettering to hand it to, and
//!     it is deleted, as the SDK's contract for `Reject` says. The policy is
//!     read at start and every minute.
//!   - While a record is in flight its message's visibility is extended
//!     (ChangeMessageVisibilityBatch) whenever half the visibility timeout is
//!     left, by the visibility timeout, so a slow function does not cause a
//!     second delivery.
//!   - FIFO queues (a name ending in `.fifo`): records carry their
//!     `MessageGroupId` as `scope`, so the engine keeps one batch per group
//!     in flight, in order; SQS hands out no later message of a group while
//!     one is in flight. Standard queues make no ordering promise. On a
//!     server that is not AWS's, a FIFO queue's pollers take turns to
//!     receive: emulators such as moto do not lock message groups across
//!     concurrent receives ([`SqsSource::with_serialized_receives`]).
//!   - At most `max_concurrency * 20` messages are in flight (see
//!     [`SqsSource::with_max_in_flight`]); a poller receives again only when
//!     ten more fit, and waits on the engine's bounded channel.
//!   - A missing queue, refused credentials or an unreachable endpoint show
//!     as `SourceState::Disconnected` with the reason, and every poller
//!     retries with backoff (1 s doubling to 30 s) until shutdown.
//!   - On shutdown the pollers stop (a receive already sent gets two more
//!     seconds; what it brings is made visible again), then the source
//!     waits up to 10 s for the acks of what it handed out and settles them.
//!     Messages released meanwhile are made visible only once every poller
//!     stopped, so no receive that is being abandoned can take them.
//! - [`SqsEnvelope`]: the event around a batch, `{"Records": [...]}`.
//! - [`SqsDestination`]: sends each record as one message with
//!   SendMessageBatch (ten messages or 256 KiB a call, in order), sends again
//!   only the entries SQS failed on its side (three more tries), and fails
//!   with the entries' errors otherwise. FIFO queues get `message_group_id`
//!   (default `"switchyard"`) and a deduplication id that is the SHA-256 of
//!   the body, so an engine retry within five minutes is not enqueued twice.
//!
//! # Where requests go, and as whom
//!
//! Credentials come from the standard AWS chain (environment, profile files,
//! web identity, ECS and EC2 metadata; SSO profiles are not built in).
//! The region is `region` when set, else the one in an AWS queue URL's host,
//! else the chain's, else `us-east-1`. The endpoint is `endpoint_url` when
//! set, else `AWS_ENDPOINT_URL` or a profile's `endpoint_url`, else — for a
//! queue URL whose host is not AWS's (moto, LocalStack, ElasticMQ) — the
//! queue URL's own `scheme://host:port`, else AWS's for the region.
//!
//! HTTPS goes through rustls with ring and the system's trust store, like the
//! rest of the workspace, instead of the SDK's default aws-lc-rs.
//!
//! # The event, and where it departs from Lambda's
//!
//! Each record is `messageId, receiptHandle, body, attributes,
//! messageAttributes, md5OfBody, eventSource ("aws:sqs"), eventSourceARN,
//! awsRegion` as in Lambda's documented example. `attributes` holds every
//! system attribute SQS returns (`ApproximateReceiveCount`, `SentTimestamp`,
//! `SenderId`, `ApproximateFirstReceiveTimestamp`, and for FIFO queues
//! `SequenceNumber`, `MessageGroupId`, `MessageDeduplicationId`; also
//! `AWSTraceHeader` and `DeadLetterQueueSourceArn` when set).
//! `md5OfMessageAttributes` is only present when the message has message
//! attributes. `eventSourceARN` is built from the queue URL and the region:
//! `arn:aws:sqs:<region>:<account>:<queue>`.

mod client;
mod config;
mod destination;
mod envelope;
mod error;
mod source;

pub use config::{
    DEFAULT_MAX_CONCURRENCY, DEFAULT_MESSAGE_GROUP_ID, DEFAULT_WAIT_TIME, MAX_CONCURRENCY_RANGE,
    MAX_VISIBILITY_TIMEOUT, SqsDestinationConfig, SqsSourceConfig,
};
pub use destination::{MAX_MESSAGE_BYTES, SqsDestination};
pub use envelope::{SqsEnvelope, created_at, message_data};
pub use source::SqsSource;
