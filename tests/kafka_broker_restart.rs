//! A Kafka broker restart mid-stream: the mapping shows it is disconnected,
//! resumes when the broker is back, and loses nothing. The test runs its own
//! tansu broker (on a free port, with its own storage) so that killing it
//! disturbs no other test.
#![cfg(feature = "kafka")]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{FunctionServer, Switchyard, eventually};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

fn tansu_binary() -> String {
    let home = std::env::var("HOME").unwrap_or_default();
    let installed = format!("{home}/.cargo/bin/tansu");
    if Path::new(&installed).exists() { installed } else { "tansu".to_string() }
}

/// Starts tansu on `port` with its SQLite storage in `dir`.
fn start_tansu(dir: &Path, port: u16) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    let mut child = Command::new(tansu_binary())
        .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
        .args(["--storage-engine", "sqlite://tansu.db"])
        // tansu resolves the storage path against its working directory.
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start tansu ({e}); scripts/test installs it"));
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("tansu did not listen on port {port}");
}

fn values(r: &common::Received) -> Vec<String> {
    r.body["records"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|l| l.as_array().unwrap().clone())
        .map(|rec| String::from_utf8(BASE64.decode(rec["value"].as_str().unwrap()).unwrap()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let brokers = format!("127.0.0.1:{port}");
    let mut broker = start_tansu(dir.path(), port);

    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    admin
        .create_topics(&[NewTopic::new("restart", 1, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await
        .unwrap();
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", &brokers).set("message.timeout.ms", "20000").create().unwrap();
    for i in 0..300 {
        let value = format!("v{i:03}");
        producer
            .send(FutureRecord::to("restart").key("k").payload(&value), Duration::from_secs(20))
            .await
            .unwrap_or_else(|(e, _)| panic!("produce: {e}"));
    }
    drop(producer);
    drop(admin);

    let function =
        FunctionServer::start_with_delay(Duration::from_millis(100), |_, _| (200, vec![], "{}".into())).await;
    let mapping = format!(
        "  - name: orders\n    source:\n      kafka: {{ brokers: \"{brokers}\", topics: [restart], group_id: restart-group, starting_position: earliest }}\n    batch: {{ size: 10, window: 20ms }}\n    function: f\n"
    );
    let sy = Switchyard::start(&common::config(&function.url(), "", &mapping));
    let seen = || -> HashSet<String> { function.received().iter().flat_map(values).collect() };
    eventually(Duration::from_secs(60), "some records delivered", async || (seen().len() >= 50).then_some(())).await;

    let _ = broker.kill();
    let _ = broker.wait();
    let http = common::client();
    eventually(Duration::from_secs(60), "the mapping to show it is disconnected", async || {
        let v: Value = http.get(sy.url("/v1/mappings")).send().await.ok()?.json().await.ok()?;
        (v["mappings"][0]["state"] == "disconnected").then_some(())
    })
    .await;

    let mut broker = start_tansu(dir.path(), port);
    eventually(Duration::from_secs(120), "every record delivered after the broker came back", async || {
        (seen().len() == 300).then_some(())
    })
    .await;
    let all: Vec<String> = function.received().iter().flat_map(values).collect();
    println!("delivered {} records, {} duplicates", all.len(), all.len() - 300);
    eventually(Duration::from_secs(30), "the mapping to show it is running again", async || {
        let v: Value = http.get(sy.url("/v1/mappings")).send().await.ok()?.json().await.ok()?;
        (v["mappings"][0]["state"] == "running").then_some(())
    })
    .await;
    drop(sy);
    let _ = broker.kill();
    let _ = broker.wait();
}
