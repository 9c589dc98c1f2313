//! MQTT mappings end to end: the real binary subscribed to the real Mosquitto
//! (127.0.0.1:1883, running on every machine of this project), messages
//! published with mosquitto_pub at QoS 1.

#![cfg(feature = "mqtt")]

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::{FunctionServer, Switchyard, eventually};
use serde_json::json;

fn publish(topic: &str, payloads: &[String]) {
    for payload in payloads {
        let out = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", "1883", "-q", "1", "-t", topic, "-m", payload])
            .output()
            .expect("mosquitto_pub (Debian package mosquitto-clients) is needed by this test");
        assert!(out.status.success(), "mosquitto_pub: {}", String::from_utf8_lossy(&out.stderr));
    }
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
