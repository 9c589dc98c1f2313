//! The source's metrics: consumer lag from librdkafka's statistics, the
//! rebalances counter and synchronous commits.

use std::time::{Duration, Instant};

use switchyard_kafka::{KafkaSource, StartingPosition};
use switchyard_sdk::Outcome;
use switchyard_testkit::metrics::{recorded, value};

use crate::support::{brokers, create_topic, produce, producer, source_config, start_as, unique};

#[tokio::test]
async fn lag_rebalances_and_commits_are_measured() {
    recorded();
    let brokers = brokers();
    let topic = create_topic(&brokers, "metrics", 1).await;
    let payloads: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    produce(&producer(&brokers), &topic, 0, &payloads).await;
    let mapping = unique("metrics");
    let config = source_config(&brokers, &topic, &unique("metrics"), StartingPosition::Earliest);
    let mut running = start_as(&mapping, KafkaSource::new(&config).expect("valid config"));
    for _ in &payloads {
        running.next(Duration::from_secs(20)).await.ack.complete(Outcome::Delivered);
    }

    // librdkafka reports statistics every 5 s.
    let lag = format!("switchyard_source_lag_records{{mapping={mapping},partition={topic}-0}}");
    let deadline = Instant::now() + Duration::from_secs(12);
    while value(&lag).is_none() {
        assert!(Instant::now() < deadline, "no {lag} within 12 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rebalances = value(&format!("switchyard_kafka_rebalances_total{{mapping={mapping}}}"));
    assert!(rebalances.is_some_and(|n| n >= 1.0), "rebalances: {rebalances:?}");

    running.stop().await.expect("clean shutdown");
    // The automatic commit (every second) or the one at shutdown.
    let commits = value(&format!("switchyard_kafka_commits_total{{mapping={mapping},outcome=ok}}"));
    assert!(commits.is_some_and(|n| n >= 1.0), "commits: {commits:?}");
}
