//! The MQTT connector against a real broker (Mosquitto on 127.0.0.1:1883;
//! `MQTT_URL` overrides the address).

mod conformance;
mod destination;
mod disconnected;
mod envelope;
mod metrics;
mod reconnect;
mod retry;
mod session;
mod shared;
mod support;
