//! A lost connection: Disconnected, then Running again on a new connection;
//! the unacked message comes back, and the late ack of its old record is
//! ignored.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::FieldTable;
use serde_json::json;
use switchyard_amqp::RabbitMqSource;
use switchyard_sdk::{Outcome, SourceState};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::support::{Broker, body, host_port, source_config, start, via_port};

/// A TCP proxy on loopback whose connections can be cut, as a network
/// failure would, without touching the shared broker.
struct Proxy {
    port: u16,
    accept: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: (String, u16)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let tracked = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let forward = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tracked.lock().unwrap_or_else(PoisonError::into_inner).push(forward);
            }
        });
        Self { port, accept, connections }
    }

    /// Closes every connection made so far; new ones are still accepted.
    fn cut(&self) {
        for connection in self.connections.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
            connection.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

#[tokio::test]
async fn lost_connection_reconnects_and_redelivers() {
    let broker = Broker::connect().await;
    let queue = broker.queue("reconnect", FieldTable::default()).await;
    broker.publish(&queue, b"held", BasicProperties::default()).await;
    let proxy = Proxy::start(host_port(&broker.url)).await;
    let url = via_port(&broker.url, proxy.port);
    let source = RabbitMqSource::new(&source_config(&url, &queue))
        .expect("valid config")
        .with_backoff(Duration::from_millis(200), Duration::from_secs(1));
    let mut running = start(source);
    let first = running.next(Duration::from_secs(10)).await;
    assert_eq!((body(&first), first.data["redelivered"].clone()), ("held".to_string(), json!(false)));

    proxy.cut();
    let state =
        running.wait_for(Duration::from_secs(10), "Disconnected", |s| matches!(s, SourceState::Disconnected(_))).await;
    eprintln!("after the cut: {state:?}");
    // The delivery tag of `first` died with its channel: this ack must be
    // ignored, not sent on the new channel (where it could ack another message).
    first.ack.complete(Outcome::Delivered);

    running.wait_for(Duration::from_secs(10), "Running", |s| *s == SourceState::Running).await;
    let again = running.next(Duration::from_secs(10)).await;
    assert_eq!((body(&again), again.data["redelivered"].clone()), ("held".to_string(), json!(true)));
    again.ack.complete(Outcome::Delivered);
    running.stop().await.expect("clean shutdown");
    assert!(broker.get(&queue, Duration::ZERO).await.is_none(), "acked once, on the new connection");
    broker.delete(&queue).await;
}
