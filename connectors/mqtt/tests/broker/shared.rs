//! A shared subscription: two sources in one group, with their own client
//! ids, split the messages; together they get every one.

use std::collections::BTreeSet;
use std::time::Duration;

use switchyard_mqtt::{MqttSource, MqttSourceConfig, Protocol};
use switchyard_sdk::{Outcome, SourceState};

use crate::support::{Running, forget_session, mqtt_url, payload, publish_text, start, unique};

const WAIT: Duration = Duration::from_secs(10);

fn replica(url: &str, filter: &str, group: &str, client_id: &str, protocol: Protocol) -> MqttSource {
    let config: MqttSourceConfig = serde_json::from_value(serde_json::json!({
        "url": url,
        "topics": [filter],
        "client_id": client_id,
        "shared_group": group,
        "protocol": match protocol { Protocol::V311 => "v311", Protocol::V5 => "v5" },
    }))
    .expect("a valid source config");
    let source = MqttSource::new(&config).expect("valid source config");
    assert_eq!(source.filters(), [format!("$share/{group}/{filter}")]);
    source
}

async fn split(protocol: Protocol) {
    let url = mqtt_url();
    let (topic, group) = (unique("shared"), unique("group"));
    let filter = format!("{topic}/+");
    let ids = [unique("replica-a"), unique("replica-b")];
    let mut replicas: Vec<Running> = ids.iter().map(|id| start(replica(&url, &filter, &group, id, protocol))).collect();
    for running in &mut replicas {
        running.wait_for(WAIT, "Running", |s| *s == SourceState::Running).await;
    }
    let payloads: Vec<String> = (0..100).map(|i| format!("reading-{i}")).collect();
    publish_text(&url, &format!("{topic}/sensor"), &payloads).await;

    let mut seen: [BTreeSet<String>; 2] = Default::default();
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen[0].len() + seen[1].len() < payloads.len() {
        let (a, b) = replicas.split_at_mut(1);
        let (which, record) = tokio::select! {
            Some(record) = a[0].rx.recv() => (0, record),
            Some(record) = b[0].rx.recv() => (1, record),
            _ = tokio::time::sleep_until(deadline) => panic!(
                "only {} + {} of {} messages within {WAIT:?}", seen[0].len(), seen[1].len(), payloads.len()
            ),
        };
        assert!(seen[which].insert(payload(&record)), "a replica got a message twice");
        record.ack.complete(Outcome::Delivered);
    }
    eprintln!("shared subscription ({protocol:?}): {} + {}", seen[0].len(), seen[1].len());
    assert!(seen[0].is_disjoint(&seen[1]), "each message went to one replica");
    assert!(!seen[0].is_empty() && !seen[1].is_empty(), "both replicas got a share");
    let union: BTreeSet<String> = seen[0].union(&seen[1]).cloned().collect();
    assert_eq!(union, payloads.iter().cloned().collect::<BTreeSet<_>>(), "nothing lost");
    for running in replicas {
        running.stop().await.expect("clean shutdown");
    }
    for id in &ids {
        forget_session(&url, id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_311_shared_subscription_splits_the_stream() {
    split(Protocol::V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_5_shared_subscription_splits_the_stream() {
    split(Protocol::V5).await;
}
