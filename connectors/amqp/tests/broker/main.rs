//! The RabbitMQ connector against a real broker (RabbitMQ on
//! 127.0.0.1:5672, user guest; `AMQP_URL` overrides the address).

mod conformance;
mod dead_letter;
mod destination;
mod disconnected;
mod envelope;
mod metrics;
mod reconnect;
mod support;
