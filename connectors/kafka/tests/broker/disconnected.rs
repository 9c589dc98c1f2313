//! An unreachable cluster shows as Disconnected, not as a crash.

use std::time::Duration;

use switchyard_kafka::{KafkaSource, StartingPosition};
use switchyard_sdk::SourceState;

use crate::support::{source_config, start};

#[tokio::test]
async fn unreachable_brokers_show_as_disconnected_and_shut_down_cleanly() {
    // Nothing listens on port 1.
    let config = source_config("127.0.0.1:1", "nowhere", "nobody", StartingPosition::Latest);
    let running = start(KafkaSource::new(&config).expect("valid config"));
    let mut state = running.state.clone();
    let disconnected = tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|state| matches!(state, SourceState::Disconnected(_))),
    )
    .await
    .map(|waited| waited.map(|state| state.clone()));
    match disconnected {
        Ok(Ok(state)) => eprintln!("state: {state:?}"),
        Ok(Err(_)) => panic!("the source ended instead of reporting Disconnected"),
        Err(_) => panic!("no Disconnected state within 10 s: {:?}", *running.state.borrow()),
    }
    assert!(!running.task.is_finished(), "the source keeps retrying while the brokers are down");
    running.stop().await.expect("clean shutdown");
    assert_eq!(*state.borrow(), SourceState::Stopped);
}
