//! Switchyard's NATS connector, on async-nats and tokio.
//!
//! - [`NatsSource`]: reads a JetStream stream through a durable pull
//!   consumer, created when missing (explicit acks, the configured filter
//!   subjects, ack wait and max ack pending; an existing consumer is brought
//!   to those three settings, everything else its owner set is kept). Each
//!   message becomes one record; `Delivered` acks it, `Retry` (or a dropped
//!   ack) naks it, `Reject` terms it. A nak or a term carries a reply
//!   subject and counts as done once the server answered (JetStream's
//!   "double ack"); an unanswered one is sent again. An ack is sent once,
//!   unconfirmed: one that is lost means a redelivery after the ack wait,
//!   never a loss. While a record is being worked on the source sends
//!   in-progress acks (`+WPI`) every third of the ack wait, so a long
//!   invocation never lets the ack wait run out.
//! - [`NatsEnvelope`]: the event around a batch.
//! - [`NatsDestination`]: publishes each record to one subject through
//!   JetStream and succeeds once the stream acknowledged every message.
//!
//! # A record
//!
//! `Record::id` is `<stream>:<stream sequence>` (`"ORDERS:42"`), which is also
//! what a function names in `batchItemFailures[].itemIdentifier`.
//! `created_at` is when the stream stored the message. The record's JSON:
//!
//! ```json
//! {
//!   "subject": "orders.created",
//!   "stream": "ORDERS",
//!   "consumer": "switchyard-orders",
//!   "streamSequence": 42,
//!   "consumerSequence": 40,
//!   "deliveryCount": 1,
//!   "timestamp": "2026-11-26T19:41:57.123Z",
//!   "headers": {"Nats-Msg-Id": ["a1"], "X-Tag": ["a", "b"]},
//!   "data": "eyJpZCI6NDJ9"
//! }
//! ```
//!
//! - `subject`: the subject the message was published to.
//! - `stream`, `consumer`: where it was read from.
//! - `streamSequence`: its sequence in the stream (stable across
//!   redeliveries); `consumerSequence`: the consumer's delivery sequence
//!   (new on every delivery).
//! - `deliveryCount`: 1 on the first delivery, 2 on the first redelivery...
//! - `timestamp`: when the stream stored it, RFC 3339 in UTC with
//!   milliseconds.
//! - `headers`: every header, each name with the list of its values in the
//!   order they were written (`{}` without headers).
//! - `data`: the payload in base64. Filters and transforms see it decoded
//!   (parsed when it is JSON), as for the other brokers.
//!
//! # The event
//!
//! ```json
//! {"eventSource": "switchyard:nats", "stream": "ORDERS", "consumer": "switchyard-orders", "records": [...]}
//! ```
//!
//! An `on_failure` record gets `NatsBatchInfo`: `batchSize`, `stream`,
//! `consumer`, `firstStreamSequence`, `lastStreamSequence`,
//! `firstTimestamp`, `lastTimestamp` (lowest and highest of the batch).
//!
//! # Ordering
//!
//! With `ordered: true` a record's scope is its subject, so the engine keeps
//! one batch in flight per subject and a subject's records reach the function
//! in stream order. A retry of an ordered record is not nak'd: JetStream
//! redelivers nak'd messages in the order of the naks, which stops being
//! stream order once a message fails twice. The source rewinds the subject
//! itself instead, as a partitioned log would: it hands out nothing more of
//! the subject until every record of it handed out has its outcome, then
//! hands the retried ones out again in stream order, ahead of anything newer
//! (their `deliveryCount` counts these redeliveries too). The messages stay
//! in progress on the server meanwhile. At shutdown whatever is still open is
//! nak'd at once, in stream order, so the next run gets each subject back in
//! order.
//!
//! Unordered, a retry naks with a delay of 1 s doubling with each delivery
//! up to 60 s (`deliveryCount` 1: 1 s, 2: 2 s, ...). Records the engine never
//! took (handed back at shutdown) are released at once either way.
//!
//! # Flow
//!
//! The source asks for at most 256 messages per pull request, only once the
//! engine took everything received before (its channel is bounded), and
//! never more than `max_ack_pending` minus what it holds unsettled. Pull
//! requests carry a 5 s idle heartbeat: one that goes silent (a server
//! restart) is replaced, as it is on every reconnect.
//!
//! # Connections and failures
//!
//! async-nats reconnects by itself; a lost connection shows as
//! `SourceState::Disconnected` and the source resumes pulling once the
//! client is back. An unreachable server, a missing stream (unless
//! `create_stream`), a consumer that cannot be used (a push consumer, an ack
//! policy other than explicit, several filter subjects on a server older than
//! 2.10) or one deleted while running also show as `Disconnected` with the
//! reason, and the source sets up again with backoff (1 s doubling to 30 s)
//! until shutdown.
//!
//! At shutdown the source stops pulling, releases (naks at once) what the
//! engine never took, waits up to 10 s for the outcomes of what it did take,
//! and naks at once whatever is still open then.
//!
//! # Metrics
//!
//! `switchyard_source_connected{mapping}` (1 connected and consuming, 0 not),
//! `switchyard_nats_connections_total{mapping, outcome}` (setup attempts:
//! connect, stream, consumer; `ok` or `error`), and
//! `switchyard_nats_settles_total{mapping, kind, outcome}` (`ack`, `nak`,
//! `term`; an ack `sent`, a nak or term `confirmed` by the server; any of
//! them `abandoned` after five failed or unanswered sends).

mod client;
mod config;
mod destination;
mod envelope;
mod source;

pub use config::{
    DEFAULT_ACK_WAIT, DEFAULT_MAX_ACK_PENDING, MAX_MAX_ACK_PENDING, MIN_ACK_WAIT, NatsDestinationConfig,
    NatsSourceConfig,
};
pub use destination::NatsDestination;
pub use envelope::{Delivery, NatsEnvelope, message_data, timestamp};
pub use source::NatsSource;
