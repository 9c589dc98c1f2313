//! The SQS connector against a real SQS API server: moto on 127.0.0.1:4566
//! (`SWITCHYARD_TEST_SQS_ENDPOINT` overrides it), started by `scripts/test`.
//! The event shape is also checked with aws-lambda-powertools' parser models
//! (`SWITCHYARD_TEST_PYTHON`, default `target/test-venv/bin/python`).

mod conformance;
mod destination;
mod disconnected;
mod envelope;
mod fifo;
mod metrics;
mod settle;
mod support;
mod throughput;
