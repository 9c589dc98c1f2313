//! The source across a restart of its server. The test runs a nats-server of
//! its own (`NATS_SERVER_BIN`, else /usr/sbin/nats-server, else `nats-server`
//! on the PATH) on a free loopback port with a fresh store, so stopping it
//! disturbs nothing else. It fails, never skips, when there is none.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, stream};
use switchyard_nats::{NatsSource, NatsSourceConfig};
use switchyard_sdk::{Outcome, SourceState};
use switchyard_testkit::running::{Running, start};

/// A nats-server with JetStream, stopped (and its store removed) on drop.
struct Server {
    binary: PathBuf,
    port: u16,
    store: PathBuf,
    child: Option<Child>,
}

impl Server {
    fn start() -> Self {
        let binary = std::env::var_os("NATS_SERVER_BIN")
            .map(PathBuf::from)
            .or_else(|| Some(PathBuf::from("/usr/sbin/nats-server")).filter(|p| p.exists()))
            .unwrap_or_else(|| PathBuf::from("nats-server"));
        // A port the kernel just handed out and took back: free unless some
        // other process grabs it in between.
        let port =
            TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port");
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
        let store = std::env::temp_dir().join(format!("switchyard-nats-restart-{}-{nanos:x}", std::process::id()));
        let mut server = Self { binary, port, store, child: None };
        server.spawn();
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.binary)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {} (install nats-server, or set NATS_SERVER_BIN): {e}", self.binary.display())
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen on 127.0.0.1:{} within 10 s", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server the hard way, as a crash would.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        remove(&self.store);
    }
}

fn remove(path: &Path) {
    if path.exists() {
        let _ = std::fs::remove_dir_all(path);
    }
}

async fn wait_running(running: &mut Running) {
    running.wait_for(Duration::from_secs(30), "Running", |s| *s == SourceState::Running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_carries_on_across_a_server_restart() {
    let mut server = Server::start();
    let url = server.url();
    let client = async_nats::connect(url.as_str()).await.expect("connect to the test's own server");
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: "RESTART".into(),
        subjects: vec!["restart.>".into()],
        ..Default::default()
    })
    .await
    .expect("create the stream");
    for i in 0..3 {
        js.publish("restart.x", format!("before-{i}").into()).await.expect("publish").await.expect("PubAck");
    }

    let config = NatsSourceConfig {
        url: url.clone(),
        stream: "RESTART".into(),
        consumer: "switchyard".into(),
        subjects: vec!["restart.>".into()],
        create_stream: false,
        ordered: false,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 100,
    };
    let source = NatsSource::new(&config)
        .expect("valid config")
        .with_backoff(Duration::from_millis(200), Duration::from_secs(1));
    let mut running = start("restart", Box::new(source));
    let mut held = None;
    for i in 0..3 {
        let record = running.next(Duration::from_secs(10)).await;
        if i == 2 {
            held = Some(record);
        } else {
            record.ack.complete(Outcome::Delivered);
        }
    }
    // Let the two acks reach the server before it goes.
    tokio::time::sleep(Duration::from_millis(300)).await;

    server.kill();
    let state =
        running.wait_for(Duration::from_secs(10), "Disconnected", |s| matches!(s, SourceState::Disconnected(_))).await;
    assert!(format!("{state:?}").contains(&url), "{state:?}");
    // Acked while the server is down: sent once it is back.
    if let Some(record) = held.take() {
        record.ack.complete(Outcome::Delivered);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.spawn();
    wait_running(&mut running).await;

    let client = async_nats::connect(url.as_str()).await.expect("connect again");
    let js = jetstream::new(client);
    for i in 0..3 {
        js.publish("restart.x", format!("after-{i}").into()).await.expect("publish").await.expect("PubAck");
    }
    let mut after = Vec::new();
    for _ in 0..3 {
        let record = running.next(Duration::from_secs(20)).await;
        assert_eq!(record.data["deliveryCount"], 1, "nothing from before the restart comes back: {}", record.data);
        after.push(record.data["streamSequence"].as_u64().unwrap_or_default());
        record.ack.complete(Outcome::Delivered);
    }
    after.sort_unstable();
    assert_eq!(after, [4, 5, 6]);

    let deadline = Instant::now() + Duration::from_secs(10);
    let info = loop {
        let info = js.get_stream("RESTART").await.expect("stream").consumer_info("switchyard").await.expect("consumer");
        if info.num_ack_pending == 0 || Instant::now() > deadline {
            break info;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((info.num_ack_pending, info.num_pending, info.num_redelivered), (0, 0, 0), "{info:?}");
    assert_eq!(info.ack_floor.stream_sequence, 6);
    running.stop().await.expect("clean shutdown");
}
