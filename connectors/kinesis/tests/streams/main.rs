//! The Kinesis connector against real Kinesis API servers: moto on
//! 127.0.0.1:4566 (`SWITCHYARD_TEST_KINESIS_ENDPOINT` overrides it) and,
//! for resharding, kinesalite on 127.0.0.1:4567
//! (`SWITCHYARD_TEST_KINESALITE_ENDPOINT`), which reshards as AWS does where
//! moto does not. The event shape is also checked with aws-lambda-powertools'
//! `KinesisDataStreamModel` (`SWITCHYARD_TEST_PYTHON`, default
//! `target/test-venv/bin/python`). A missing server fails the test.

mod checkpoints;
mod conformance;
mod delivery;
mod destination;
mod envelope;
mod reshard;
mod support;
