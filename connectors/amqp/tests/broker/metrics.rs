//! The source's metrics: connection attempts by outcome and the connected
//! gauge.

use std::time::Duration;

use lapin::types::FieldTable;
use switchyard_amqp::RabbitMqSource;
use switchyard_sdk::SourceState;
use switchyard_testkit::metrics::{recorded, value};

use crate::support::{Broker, source_config, start_as, unique};

#[tokio::test]
async fn connection_attempts_and_the_connected_gauge_are_measured() {
    recorded();
    let broker = Broker::connect().await;
    let queue = unique("metrics");
    let mapping = unique("metrics");
    let source = RabbitMqSource::new(&source_config(&broker.url, &queue))
        .expect("valid config")
        .with_backoff(Duration::from_millis(200), Duration::from_secs(1));
    let mut running = start_as(&mapping, source);
    let (errors, oks, connected) = (
        format!("switchyard_amqp_connections_total{{mapping={mapping},outcome=error}}"),
        format!("switchyard_amqp_connections_total{{mapping={mapping},outcome=ok}}"),
        format!("switchyard_source_connected{{mapping={mapping}}}"),
    );

    running.wait_for(Duration::from_secs(10), "Disconnected", |s| matches!(s, SourceState::Disconnected(_))).await;
    assert!(value(&errors).is_some_and(|n| n >= 1.0), "{errors}: {:?}", value(&errors));
    assert_eq!(value(&connected), Some(0.0));

    broker.declare(&queue, &mut FieldTable::default()).await;
    running.wait_for(Duration::from_secs(10), "Running", |s| *s == SourceState::Running).await;
    assert_eq!(value(&oks), Some(1.0));
    assert_eq!(value(&connected), Some(1.0));

    running.stop().await.expect("clean shutdown");
    assert_eq!(value(&connected), Some(0.0), "not connected after shutdown");
    broker.delete(&queue).await;
}
