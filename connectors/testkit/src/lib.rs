//! Conformance checks every Switchyard source connector passes.
//!
//! A source connector proves, in its own tests and against its real broker,
//! that it loses nothing and keeps order where it promises to. The kit drives
//! the source exactly the way the engine does: it spawns `run` with a bounded
//! channel (capacity [`CHANNEL_CAPACITY`]) and a shutdown token, and completes
//! each record's [`Ack`](switchyard_sdk::Ack) with a seeded mix of outcomes:
//!
//! - `Delivered`, `Retry`, or no outcome at all (the ack is dropped, which the
//!   SDK reports as a retry), choosing to fail one payload at most three times
//!   so the run converges;
//! - at once on the receiving task, or later from other tasks after short
//!   random delays, so completions overtake each other;
//! - for a share of "filtered" payloads, `Delivered` on receipt, ahead of
//!   earlier records of the same scope still in flight.
//!
//! It also restarts the source a few times: it lets every outcome decided so
//! far reach the source, holds the acks of the next few records back, cancels
//! the shutdown token, drops the held acks only then, waits for `run` to return
//! and starts a fresh source from the fixture, which must hand the held
//! records out again.
//!
//! For an ordered source (Kafka, Kinesis) it processes each scope like the
//! engine: records of one scope in sequence, and after a retry every later
//! record of that scope is retried as well until the source rewinds to the
//! retried one. It then checks that, within each scope, payloads reach the
//! function for the first time in the order they were produced (duplicates
//! are fine: delivery is at least once).
//!
//! # Using it in a connector
//!
//! Implement [`Fixture`] for a fresh queue or topic on the test broker, and run
//! [`Conformance`] against it from an ordinary test. The broker is real and
//! started by `scripts/test`; a test that cannot reach it fails, it never skips.
//! In outline (the names of the Kafka helpers are the connector's own):
//!
//! ```text
//! use async_trait::async_trait;
//! use switchyard_sdk::{Record, Source};
//! use switchyard_testkit::{Conformance, Fixture};
//!
//! struct KafkaFixture {
//!     brokers: String,
//!     topic: String, // created fresh for this test
//! }
//!
//! #[async_trait]
//! impl Fixture for KafkaFixture {
//!     async fn source(&self) -> Box<dyn Source> {
//!         // Same topic and group every time: a restart resumes from the
//!         // group's committed offsets.
//!         Box::new(KafkaSource::new(config(&self.brokers, &self.topic, "conformance")))
//!     }
//!
//!     async fn produce(&self, payloads: &[String]) {
//!         let producer = producer(&self.brokers);
//!         for payload in payloads {
//!             producer.send(&self.topic, payload).await.expect("produce to the test broker");
//!         }
//!     }
//!
//!     fn payload(&self, record: &Record) -> String {
//!         decode_value(&record.data["value"])
//!     }
//!
//!     fn ordered(&self) -> bool {
//!         true // records of one partition stay in order
//!     }
//! }
//!
//! #[tokio::test]
//! async fn kafka_source_conforms() {
//!     let fixture = KafkaFixture::fresh().await;
//!     let report = Conformance::default().run(&fixture).await.unwrap_or_else(|v| panic!("{v}"));
//!     assert_eq!(report.delivered, report.produced);
//! }
//! ```
//!
//! A failed run returns a [`Violation`]: payloads [`Lost`](Violation::Lost),
//! a scope [`OutOfOrder`](Violation::OutOfOrder), a source that failed,
//! panicked, or did not return after shutdown, or one too slow for
//! [`Conformance::timeout`]. The [`memory`] module has two reference sources
//! (a per-message queue and a partitioned log) with their fixtures: they pass
//! the kit, and show the two ways of acknowledging records.

mod completer;
mod conformance;
mod fixture;
pub mod memory;
pub mod metrics;
pub mod running;
mod violation;

pub use conformance::{CHANNEL_CAPACITY, Conformance, Report};
pub use fixture::Fixture;
pub use violation::Violation;
