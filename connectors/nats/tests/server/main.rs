//! The NATS connector against a real server (nats-server with JetStream on
//! 127.0.0.1:4222; `NATS_URL` overrides the address).

mod conformance;
mod destination;
mod durable;
mod record;
mod settle;
mod setup;
mod support;
