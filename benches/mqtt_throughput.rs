//! MQTT mapping throughput: QoS 1 messages/s queued for a persistent session
//! through Switchyard to a trivial HTTP function, against a bare rumqttc
//! subscriber (QoS 1, acking as it reads) on the same broker and data in the
//! same run (docs/benchmarks.md).
//!
//! Starts a Mosquitto of its own on a free port, so the broker's queue and
//! in-flight limits are the benchmark's (`max_queued_messages 0`: keep every
//! message queued for an absent session; `max_inflight_messages`, the same
//! window for both clients, 100 unless `--window N`).
//! `cargo bench --bench mqtt_throughput` (optionally `-- --messages 20000
//! --window 1000 --batch 100 --rounds 5`; the batch is 50 unless set; with
//! rounds, the pairs of runs repeat and the median ratio closes the report)

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

const TOPIC: &str = "bench/devices/telemetry";

struct Broker {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_broker(window: usize) -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages {window}\n"
        ),
    )
    .unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto (Debian package mosquitto)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Broker { child, port, _dir: dir }
}

fn client(id: &str, port: u16) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_clean_session(false).set_keep_alive(Duration::from_secs(30)).set_inflight(100);
    AsyncClient::new(options, 1000)
}

/// Creates the persistent session of `id`, subscribed at QoS 1, and leaves.
async fn register_session(id: &str, port: u16) {
    let (client, mut events) = client(id, port);
    client.subscribe(TOPIC, QoS::AtLeastOnce).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.expect("subscribe") {
            break;
        }
    }
    client.disconnect().await.unwrap();
    while events.poll().await.is_ok() {}
}

async fn prefill(port: u16, messages: usize) {
    let (client, mut events) = client("bench-publisher", port);
    let body = format!("{{\"reading\":{}}}", "7".repeat(180));
    let publisher = tokio::spawn(async move {
        for _ in 0..messages {
            client.publish(TOPIC, QoS::AtLeastOnce, false, body.clone()).await.unwrap();
        }
        client
    });
    let mut acked = 0;
    while acked < messages {
        if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.expect("publish") {
            acked += 1;
        }
    }
    let client = publisher.await.unwrap();
    client.disconnect().await.unwrap();
    while events.poll().await.is_ok() {}
}

/// Reads the session's queued messages; rumqttc acknowledges each as it reads.
async fn bare_subscriber(port: u16, messages: usize) -> Duration {
    let mut started = None;
    let (client, mut events) = client("bench-bare", port);
    client.subscribe(TOPIC, QoS::AtLeastOnce).await.unwrap();
    let mut n = 0;
    while n < messages {
        let event = tokio::time::timeout(Duration::from_secs(30), events.poll())
            .await
            .expect("messages keep coming")
            .expect("connection");
        if let Event::Incoming(Packet::Publish(_)) = event {
            started.get_or_insert_with(Instant::now);
            n += 1;
        }
    }
    let elapsed = started.map_or(Duration::ZERO, |s: Instant| s.elapsed());
    client.disconnect().await.unwrap();
    elapsed
}

#[tokio::main]
async fn main() {
    let messages = support::arg("--messages", 20_000);
    let window = support::arg("--window", 100);
    let batch = support::arg("--batch", 50);
    let broker = start_broker(window);
    register_session("bench-bare", broker.port).await;
    register_session("switchyard-bench", broker.port).await;
    support::rounds(|| round(broker.port, messages, window, batch)).await;
}

/// One pair of runs: the messages published to both sessions, read by the
/// bare subscriber, then by Switchyard.
async fn round(port: u16, messages: usize, window: usize, batch: usize) -> support::Report<'static> {
    prefill(port, messages).await;

    let (bare, bare_cpu) = support::with_cpu(bare_subscriber(port, messages)).await;

    let count = Arc::new(AtomicUsize::new(0));
    let function = support::counting_function("records", count.clone()).await;
    let config = format!(
        "server:\n  listen: 127.0.0.1:0\nstate:\n  dir: STATE_DIR\nfunctions:\n  f:\n    http: {{ url: http://{function}/ }}\nmappings:\n  - name: bench\n    source:\n      mqtt: {{ url: \"mqtt://127.0.0.1:{port}\", topics: [\"{TOPIC}\"], qos: 1, client_id: switchyard-bench, max_inflight: {window} }}\n    batch: {{ size: {batch}, window: 100ms }}\n    function: f\n"
    );
    let run = support::run_until(&config, &count, messages).await;

    support::Report {
        title: format!("MQTT throughput ({messages} QoS 1 messages of 200 B, broker window {window}, batch {batch})"),
        unit: "messages",
        total: messages,
        bare_label: "bare rumqttc subscriber (QoS 1)",
        bare,
        bare_cpu: Some(bare_cpu),
        switchyard_label: "Switchyard → HTTP function (from the first records at the function)",
        run,
        goal: 0.7,
    }
}
