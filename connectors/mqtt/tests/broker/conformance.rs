//! The conformance kit against a fresh topic and session, for both protocol
//! versions.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use switchyard_mqtt::Protocol;
use switchyard_sdk::{Record, Source};
use switchyard_testkit::{Conformance, Fixture};

use crate::support::{forget_session, mqtt_url, payload, prime, publish_text, source, unique};

struct SessionFixture {
    url: String,
    topic: String,
    client_id: String,
    protocol: Protocol,
}

#[async_trait]
impl Fixture for SessionFixture {
    async fn source(&self) -> Box<dyn Source> {
        // Same client id every time: a restart resumes the session and gets
        // what the previous source left unacknowledged.
        let source = source(&self.url, &[&self.topic], &self.client_id, self.protocol)
            .with_drain_timeout(Duration::from_secs(5));
        Box::new(source)
    }

    async fn produce(&self, payloads: &[String]) {
        // MQTT keeps messages only for existing subscriptions: the session
        // subscribes before anything is published.
        prime(&self.url, &self.client_id, &[&self.topic], self.protocol).await;
        publish_text(&self.url, &self.topic, payloads).await;
    }

    fn payload(&self, record: &Record) -> String {
        payload(record)
    }
}

async fn conforms(protocol: Protocol) {
    let url = mqtt_url();
    let fixture = SessionFixture { topic: unique("conformance"), client_id: unique("conformance"), url, protocol };
    let started = Instant::now();
    let result = Conformance::default().run(&fixture).await;
    forget_session(&fixture.url, &fixture.client_id).await;
    let report = result.unwrap_or_else(|v| panic!("{v}"));
    eprintln!("conformance ({protocol:?}): {report:?} in {:?}", started.elapsed());
    assert_eq!(report.delivered, report.produced);
    assert_eq!(report.restarts, Conformance::default().restarts);
    assert!(report.redeliveries > 0, "retried records came back: {report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_311_source_conforms() {
    conforms(Protocol::V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_5_source_conforms() {
    conforms(Protocol::V5).await;
}
