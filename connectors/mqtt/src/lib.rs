//! Switchyard's MQTT connector, on rumqttc and tokio, for MQTT 3.1.1 and 5.
//!
//! - [`MqttSource`]: subscribes topic filters (wildcards, optionally as a
//!   shared subscription `$share/<group>/<filter>`) in a persistent session
//!   (clean session off; for MQTT 5, clean start off with a session expiry),
//!   with manual acknowledgements. A message's PUBACK is sent only once its
//!   record completed `Delivered` or `Reject`; on `Retry` the source hands the
//!   message out again from memory while withholding the PUBACK (see
//!   [`MqttSource`] for why this loses nothing). A lost
//!   connection or a refusal shows as `SourceState::Disconnected` with the
//!   reason, and the source reconnects with backoff (1 s doubling to 30 s)
//!   until shutdown; messages queued in the session while it was away arrive
//!   then. Records make no ordering promise (`scope: None`).
//! - [`MqttEnvelope`]: the event. With batch size 1 it is the message's
//!   payload itself (parsed JSON, as an AWS IoT rule delivers it, or
//!   `{"data": "<base64>"}` when the payload is not JSON); otherwise
//!   `{"eventSource": "switchyard:mqtt", "records": [...]}`.
//! - [`MqttDestination`]: publishes each record with QoS 1 and succeeds once
//!   the broker acknowledged every one.
//!
//! # The record
//!
//! ```json
//! {"topic": "devices/d1/telemetry", "qos": 1, "retain": false, "dup": false,
//!  "messageId": 7, "receivedAt": "2025-01-01T12:00:00.123Z", "data": "<base64 payload>"}
//! ```
//!
//! The payload stays in base64 under `data`, where filters and transforms
//! look for it (they see it decoded, and parsed when it is JSON). Record ids
//! are `<topic>:<messageId>:<n>`, `n` unique in the process.
//!
//! # Broker settings that matter
//!
//! - The broker's in-flight window bounds what the source can hold
//!   unacknowledged, and so the size of a batch: MQTT 5's Receive Maximum is
//!   `max_inflight`; an MQTT 3.1.1 client cannot set it, and Mosquitto's
//!   `max_inflight_messages` defaults to 20. A batch larger than the window
//!   fills only at its window's end.
//! - A broker bounds the messages it queues for a session (Mosquitto's
//!   `max_queued_messages`, 1000 by default) and drops QoS 1 messages beyond
//!   that while the source is away or slow.
//! - rumqttc writes one manual PUBACK per turn of its event loop, and a turn
//!   that reads the socket takes up to ten messages, so under a steady inflow
//!   PUBACKs trail the records' completions (by several hundred at about
//!   8000 messages/s here). A broker that keeps to its in-flight window stops
//!   sending and lets them catch up; Mosquitto 2.0.11 sends a whole new
//!   window after every PUBACK, so with it the backlog only stops at
//!   `max_queued_messages`. Run Mosquitto with `max_queued_messages 0` (or a
//!   bound well above the backlog a mapping may build) for the source.

mod config;
mod conn;
mod destination;
mod envelope;
mod source;

pub use config::{
    DEFAULT_KEEP_ALIVE, DEFAULT_MAX_INFLIGHT, DEFAULT_MAX_PACKET_SIZE, DEFAULT_SESSION_EXPIRY, MqttDestinationConfig,
    MqttSourceConfig, Protocol,
};
pub use destination::MqttDestination;
pub use envelope::{EVENT_SOURCE, MqttEnvelope};
pub use source::MqttSource;
