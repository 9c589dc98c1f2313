//! The Kafka connector against a real Kafka-compatible broker (tansu, started
//! by `scripts/test`; `KAFKA_BROKERS` overrides the address).

mod conformance;
mod destination;
mod disconnected;
mod envelope;
mod metrics;
mod support;
