//! A lost connection: Disconnected, then Running again on a new connection;
//! the unacknowledged message comes back with DUP set, and the late ack of
//! its old record is ignored.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::json;
use switchyard_mqtt::Protocol;
use switchyard_sdk::{Outcome, SourceState};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::support::{
    assert_quiet, forget_session, host_port, mqtt_url, payload, publish_text, source, start, unique, via_port,
};

const WAIT: Duration = Duration::from_secs(10);

/// A loopback TCP relay whose connections can be severed on demand, standing
/// in for a network failure between the source and the shared broker.
struct Relay {
    port: u16,
    listener: JoinHandle<()>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    async fn to(upstream: (String, u16)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the relay");
        let port = listener.local_addr().expect("relay address").port();
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let registry = links.clone();
        let listener = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                let target = upstream.clone();
                let link = tokio::spawn(async move {
                    let host = target.0.trim_start_matches('[').trim_end_matches(']').to_string();
                    if let Ok(mut broker) = TcpStream::connect((host.as_str(), target.1)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                    }
                });
                registry.lock().unwrap_or_else(PoisonError::into_inner).push(link);
            }
        });
        Self { port, listener, links }
    }

    /// Severs every connection relayed so far; new ones still get through.
    fn sever(&self) {
        for link in self.links.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
            link.abort();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.listener.abort();
        self.sever();
    }
}

#[tokio::test]
async fn a_lost_connection_reconnects_and_the_broker_redelivers() {
    let url = mqtt_url();
    let (topic, client_id) = (unique("reconnect"), unique("reconnect"));
    let relay = Relay::to(host_port(&url)).await;
    let mut running = start(source(&via_port(&url, relay.port), &[&topic], &client_id, Protocol::V311));
    running.wait_for(WAIT, "Running", |s| *s == SourceState::Running).await;
    publish_text(&url, &topic, &["held".to_string()]).await;
    let first = running.next(WAIT).await;
    assert_eq!((payload(&first), first.data["dup"].clone()), ("held".to_string(), json!(false)));

    relay.sever();
    let state = running.wait_for(WAIT, "Disconnected", |s| matches!(s, SourceState::Disconnected(_))).await;
    eprintln!("after the cut: {state:?}");
    // Its packet id belonged to the broken connection: this ack must not
    // become a PUBACK on the new one.
    first.ack.complete(Outcome::Delivered);

    running.wait_for(WAIT, "Running", |s| *s == SourceState::Running).await;
    let again = running.next(WAIT).await;
    assert_eq!((payload(&again), again.data["dup"].clone()), ("held".to_string(), json!(true)));
    assert_ne!(again.id, "", "a new delivery");
    again.ack.complete(Outcome::Delivered);
    assert_quiet(&mut running, Duration::from_millis(500)).await;
    running.stop().await.expect("clean shutdown");

    let mut running = start(source(&url, &[&topic], &client_id, Protocol::V311));
    running.wait_for(WAIT, "Running", |s| *s == SourceState::Running).await;
    assert_quiet(&mut running, Duration::from_secs(1)).await;
    running.stop().await.expect("clean shutdown");
    forget_session(&url, &client_id).await;
}
