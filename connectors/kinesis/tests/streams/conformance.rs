//! The conformance kit against a fresh two-shard stream; checkpoints are
//! kept in one store across the kit's restarts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use switchyard_kinesis::MemoryCheckpoints;
use switchyard_sdk::{Record, Source};
use switchyard_testkit::{Conformance, Fixture};

use crate::support::{Kinesis, data, moto, source, source_config};

struct StreamFixture {
    kinesis: Kinesis,
    stream: String,
    store: Arc<MemoryCheckpoints>,
}

#[async_trait]
impl Fixture for StreamFixture {
    async fn source(&self) -> Box<dyn Source> {
        // Same stream and store every time: a restart resumes after the
        // checkpoints the previous source saved.
        Box::new(source(&source_config(&self.kinesis, &self.stream), self.store.clone()))
    }

    async fn produce(&self, payloads: &[String]) {
        let records: Vec<(String, String)> =
            payloads.iter().enumerate().map(|(i, p)| (format!("key-{}", i % 8), p.clone())).collect();
        self.kinesis.put(&self.stream, &records).await;
    }

    fn payload(&self, record: &Record) -> String {
        data(record)
    }

    fn ordered(&self) -> bool {
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_source_conforms() {
    let Some(kinesis) = moto() else { return };
    let stream = kinesis.stream("conformance", 2).await;
    let fixture = StreamFixture { kinesis, stream, store: Arc::new(MemoryCheckpoints::new()) };
    let started = Instant::now();
    let conformance = Conformance { timeout: Duration::from_secs(120), ..Conformance::default() };
    let report = conformance.run(&fixture).await.unwrap_or_else(|v| panic!("{v}"));
    eprintln!("conformance: {report:?} in {:?}", started.elapsed());
    assert_eq!(report.delivered, report.produced);
    assert_eq!(report.restarts, conformance.restarts);
    fixture.kinesis.delete(&fixture.stream).await;
}
