//! A RabbitMQ broker restart mid-stream (`rabbitmqctl stop_app` / `start_app`):
//! the mapping shows it is disconnected, reconnects, and loses nothing.
//!
//! Its own test binary: cargo runs test binaries one after another, so the
//! restart cannot disturb the other RabbitMQ tests.

#![cfg(feature = "rabbitmq")]

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{FunctionServer, Received, Switchyard, eventually};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::Value;

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn short(s: &str) -> ShortString {
    ShortString::try_new(s).unwrap()
}

fn bodies(r: &Received) -> Vec<String> {
    r.body["rmqMessagesByQueue"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|l| l.as_array().unwrap().clone())
        .map(|m| String::from_utf8(BASE64.decode(m["data"].as_str().unwrap()).unwrap()).unwrap())
        .collect()
}

fn rabbitmqctl(args: &[&str]) -> bool {
    Command::new("rabbitmqctl").args(args).output().is_ok_and(|o| o.status.success())
}

/// Stops the broker application (the node stays up).
fn stop_broker_app() {
    assert!(rabbitmqctl(&["stop_app"]), "rabbitmqctl stop_app failed");
}

fn start_broker_app() {
    assert!(rabbitmqctl(&["start_app"]), "rabbitmqctl start_app failed");
    // await_startup exits 69 when called too early: loop on it.
    for _ in 0..120 {
        if rabbitmqctl(&["await_startup", "--timeout", "5"]) {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("RabbitMQ did not start again");
}

/// Starts the broker again even when the test fails half-way.
struct RestartGuard;

impl Drop for RestartGuard {
    fn drop(&mut self) {
        if !rabbitmqctl(&["await_startup", "--timeout", "1"]) {
            start_broker_app();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_loses_nothing() {
    let queue = format!("restart-{}", uuid::Uuid::new_v4().simple());
    let connection = Connection::connect(URL, ConnectionProperties::default()).await.expect("RabbitMQ reachable");
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    channel
        .queue_declare(
            short(&queue),
            QueueDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let sent: Vec<String> = (0..600).map(|i| format!("m{i:03}")).collect();
    for body in &sent {
        channel
            .basic_publish(
                short(""),
                short(&queue),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    drop(channel);
    drop(connection);

    let function = FunctionServer::start_with_delay(Duration::from_millis(40), |_, _| (200, vec![], "{}".into())).await;
    let mapping = format!(
        "  - name: telemetry\n    source:\n      rabbitmq: {{ url: \"{URL}\", queue: {queue}, prefetch: 20 }}\n    batch: {{ size: 10, window: 20ms }}\n    function: f\n"
    );
    let sy = Switchyard::start(&common::config(&function.url(), "", &mapping));
    let seen = || -> HashSet<String> { function.received().iter().flat_map(bodies).collect() };
    eventually(Duration::from_secs(30), "some messages delivered", async || (seen().len() >= 100).then_some(())).await;

    let _guard = RestartGuard;
    stop_broker_app();
    let http = common::client();
    let state = eventually(Duration::from_secs(30), "the mapping to show it is disconnected", async || {
        let v: Value = http.get(sy.url("/v1/mappings")).send().await.ok()?.json().await.ok()?;
        let m = v["mappings"][0].clone();
        (m["state"] == "disconnected").then_some(m)
    })
    .await;
    assert!(state["error"].as_str().is_some_and(|e| !e.is_empty()), "{state}");
    start_broker_app();

    eventually(Duration::from_secs(90), "every message delivered after the restart", async || {
        (seen().len() == 600).then_some(())
    })
    .await;
    // The broker can drop a connection again while it finishes starting, so
    // the source may be between reconnects when the last message arrives: it
    // must show running again within the deadline.
    eventually(Duration::from_secs(30), "the mapping to show it is running again", async || {
        let v: Value = http.get(sy.url("/v1/mappings")).send().await.ok()?.json().await.ok()?;
        (v["mappings"][0]["state"] == "running").then_some(())
    })
    .await;
    let all: Vec<String> = function.received().iter().flat_map(bodies).collect();
    println!("delivered {} messages, {} duplicates", all.len(), all.len() - 600);

    let connection = Connection::connect(URL, ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let _ = channel.queue_delete(short(&queue), QueueDeleteOptions::default()).await;
}
