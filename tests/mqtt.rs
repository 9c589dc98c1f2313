//! MQTT mappings end to end: the real binary subscribed to the real Mosquitto
//! (127.0.0.1:1883, running on every machine of this project, or a second
//! Mosquitto of the test's own when the test restarts its broker), messages
//! published with mosquitto_pub at QoS 1.

#![cfg(feature = "mqtt")]

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::{BrokerProcess, FunctionServer, Switchyard, eventually};
use serde_json::{Value, json};

fn publish(topic: &str, payloads: &[String]) {
    publish_to(1883, topic, payloads);
}

/// Publishes each payload (one line each) at QoS 1 from one mosquitto_pub.
fn publish_to(port: u16, topic: &str, payloads: &[String]) {
    use std::io::Write as _;
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", topic, "-l"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_pub (Debian package mosquitto-clients) is needed by this test");
    let mut stdin = child.stdin.take().unwrap();
    for payload in payloads {
        assert!(!payload.contains('\n'), "one message per line");
        writeln!(stdin, "{payload}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "mosquitto_pub: {}", String::from_utf8_lossy(&out.stderr));
}

/// A Mosquitto of the test's own on a free port, persisting sessions in `dir`.
fn own_mosquitto(dir: &std::path::Path) -> BrokerProcess {
    let port = common::free_port();
    // Run as root, Mosquitto drops to its own user before it writes the
    // session store.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 100000\n",
            dir.display()
        ),
    )
    .unwrap();
    BrokerProcess::start("mosquitto", &["-c".to_string(), conf.display().to_string()], port)
}

fn readings(range: std::ops::Range<i64>) -> Vec<String> {
    range.map(|n| json!({"n": n}).to_string()).collect()
}

async fn mapping_state(sy: &Switchyard) -> Option<Value> {
    let v: Value = common::client().get(sy.url("/v1/mappings")).send().await.ok()?.json().await.ok()?;
    Some(v["mappings"][0].clone())
}

fn seen(function: &FunctionServer) -> BTreeSet<i64> {
    function.received().iter().filter_map(|r| r.body["n"].as_i64()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_survives_a_kill_9_through_the_persistent_session() {
    let device = uuid::Uuid::new_v4().simple().to_string();
    let function = FunctionServer::echo().await;
    let mapping = format!(
        "  - name: telemetry\n    function: f\n    source: {{ mqtt: {{ url: \"mqtt://127.0.0.1:1883\", topics: [\"devices/+/telemetry-{device}\"], qos: 1, client_id: sy-{device} }} }}\n    filters: [ {{ pattern: {{ data: {{ n: [{{ exists: true }}] }} }} }} ]\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&function.url(), "", &mapping);
    let mut sy = Switchyard::start_in(dir.path(), &config, &[]);
    let topic = format!("devices/d1/telemetry-{device}");
    let first: Vec<String> = (0..20).map(|n| json!({"n": n, "celsius": 20 + n}).to_string()).collect();
    publish(&topic, &first);
    eventually(Duration::from_secs(30), "the first 20 readings", async || (seen(&function).len() == 20).then_some(()))
        .await;
    // A batch of one is the payload itself, as AWS IoT rules deliver it.
    assert_eq!(function.received()[0].body["celsius"], json!(20 + function.received()[0].body["n"].as_i64().unwrap()));

    // Killed: the broker keeps what is published meanwhile for the session.
    sy.kill9();
    let second: Vec<String> = (20..40).map(|n| json!({"n": n}).to_string()).collect();
    publish(&topic, &second);
    publish(&topic, &["not json, filtered out".to_string()]);
    let _sy = Switchyard::start_in(dir.path(), &config, &[]);
    eventually(Duration::from_secs(30), "all 40 readings", async || (seen(&function).len() == 40).then_some(())).await;
    assert_eq!(seen(&function), (0..40).collect::<BTreeSet<_>>(), "every reading, none lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_nothing() {
    let broker_dir = tempfile::tempdir().unwrap();
    let mut broker = own_mosquitto(broker_dir.path());
    let function = FunctionServer::start_with_delay(Duration::from_millis(20), |_, _| (200, vec![], "{}".into())).await;
    let mapping = format!(
        "  - name: telemetry\n    function: f\n    source: {{ mqtt: {{ url: \"mqtt://127.0.0.1:{}\", topics: [\"devices/+/telemetry\"], qos: 1, client_id: sy-restart }} }}\n",
        broker.port
    );
    let dir = tempfile::tempdir().unwrap();
    let sy = Switchyard::start_in(dir.path(), &common::config(&function.url(), "", &mapping), &[]);
    eventually(Duration::from_secs(10), "the mapping to subscribe", async || {
        (mapping_state(&sy).await?["state"] == "running").then_some(())
    })
    .await;
    publish_to(broker.port, "devices/d1/telemetry", &readings(0..200));
    eventually(Duration::from_secs(30), "some readings", async || (seen(&function).len() >= 20).then_some(())).await;

    // Stopped mid-stream: Mosquitto saves the session, with what it had not
    // yet seen acknowledged, and the mapping says it lost its broker.
    broker.stop(libc::SIGTERM);
    let state = eventually(Duration::from_secs(30), "the mapping to show it is disconnected", async || {
        mapping_state(&sy).await.filter(|m| m["state"] == "disconnected")
    })
    .await;
    assert!(state["error"].as_str().is_some_and(|e| !e.is_empty()), "{state}");
    broker.restart();
    eventually(Duration::from_secs(30), "the mapping to reconnect", async || {
        (mapping_state(&sy).await?["state"] == "running").then_some(())
    })
    .await;
    publish_to(broker.port, "devices/d2/telemetry", &readings(200..300));
    let all = (0..300).collect::<BTreeSet<_>>();
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        while seen(&function) != all {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let missing: Vec<_> = all.difference(&seen(&function)).copied().collect();
    assert!(waited.is_ok(), "readings never delivered: {missing:?}");
    let delivered = function.received().len();
    println!("delivered {delivered} invocations for 300 readings");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_split_one_shared_subscription_and_lose_nothing() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    // One function per replica, to see who got what.
    let fa = FunctionServer::start_with_delay(Duration::from_millis(5), |_, _| (200, vec![], "{}".into())).await;
    let fb = FunctionServer::start_with_delay(Duration::from_millis(5), |_, _| (200, vec![], "{}".into())).await;
    let config = |function: &FunctionServer, replica: u8| {
        let mapping = format!(
            "  - name: telemetry\n    function: f\n    source: {{ mqtt: {{ url: \"mqtt://127.0.0.1:1883\", topics: [\"fleet-{id}/+/telemetry\"], qos: 1, client_id: sy-{id}-{replica}, shared_group: sy-{id} }} }}\n"
        );
        common::config(&function.url(), "", &mapping)
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Switchyard::start_in(dir_a.path(), &config(&fa, 1), &[]);
    let mut b = Switchyard::start_in(dir_b.path(), &config(&fb, 2), &[]);
    for sy in [&a, &b] {
        eventually(Duration::from_secs(10), "both replicas to subscribe", async || {
            (mapping_state(sy).await?["state"] == "running").then_some(())
        })
        .await;
    }
    let union = || seen(&fa).union(&seen(&fb)).copied().collect::<BTreeSet<_>>();
    publish_to(1883, &format!("fleet-{id}/d1/telemetry"), &readings(0..200));
    eventually(Duration::from_secs(30), "the first 200 readings", async || (union().len() == 200).then_some(())).await;
    let (share_a, share_b) = (seen(&fa).len(), seen(&fb).len());
    assert!(share_a > 0 && share_b > 0, "the group split the stream: {share_a} and {share_b}");

    // One replica killed mid-stream: its session keeps what it had not
    // acknowledged and hands it over when the replica is back.
    publish_to(1883, &format!("fleet-{id}/d2/telemetry"), &readings(200..400));
    b.kill9();
    let _b = Switchyard::start_in(dir_b.path(), &config(&fb, 2), &[]);
    eventually(Duration::from_secs(60), "all 400 readings", async || (union().len() == 400).then_some(())).await;
    assert_eq!(union(), (0..400).collect::<BTreeSet<_>>());
    drop(a);
}
