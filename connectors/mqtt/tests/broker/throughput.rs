//! A rough measurement, not a benchmark: messages per second through the
//! source (receive, hand out, PUBACK on `Delivered`) against a bare rumqttc
//! QoS 1 subscriber on the same broker. Run it with
//! `cargo test --release -p switchyard-mqtt --test broker throughput -- --ignored --nocapture`.
//! The publisher stays at most `AHEAD` messages in front of the consumer, as
//! Mosquitto's default `max_queued_messages` (1000) drops what a slow
//! subscriber has not acknowledged; a debug build's source can trail by more
//! than that, so measure a release build, or against a Mosquitto with
//! `max_queued_messages 0` (`MQTT_URL`).

use std::time::{Duration, Instant};

use rumqttc::{Event, Packet, QoS};
use switchyard_mqtt::Protocol;
use switchyard_sdk::{Outcome, SourceState};
use tokio::sync::watch;

use crate::support::{forget_session, host_port, mqtt_url, source, start, unique};

const MESSAGES: usize = 20_000;
/// Mosquitto drops QoS 1 messages beyond `max_queued_messages` (1000 by
/// default) for a slow subscriber: the publisher stays this far ahead at most.
const AHEAD: usize = 200;
const CHUNK: usize = 100;

/// Publishes `MESSAGES` payloads on one connection, never more than `AHEAD`
/// beyond what the consumer reported, and keeps the connection until the
/// consumer has them all.
async fn feed(url: String, topic: String, consumed: watch::Receiver<usize>) {
    let (host, port) = host_port(&url);
    let mut options = rumqttc::MqttOptions::new(unique("feed"), host, port);
    options.set_inflight(100);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 1000);
    let polling = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let mut consumed = consumed;
    for i in 0..MESSAGES {
        if i % CHUNK == 0 {
            let _ = consumed.wait_for(|&n| i < n + AHEAD).await;
        }
        client.publish(topic.as_str(), QoS::AtLeastOnce, false, format!("{{\"n\":{i}}}")).await.expect("publish");
    }
    let _ = consumed.wait_for(|&n| n >= MESSAGES).await;
    polling.abort();
}

async fn through_source(protocol: Protocol) -> f64 {
    let url = mqtt_url();
    let (topic, client_id) = (unique("rate"), unique("rate"));
    let mut running = start(source(&url, &[&topic], &client_id, protocol).with_batch_size(500));
    running.wait_for(Duration::from_secs(10), "Running", |s| *s == SourceState::Running).await;
    let (progress, consumed) = watch::channel(0);
    let feeder = tokio::spawn(feed(url.clone(), topic, consumed));
    let started = Instant::now();
    let mut n = 0;
    while n < MESSAGES {
        let record = running.next(Duration::from_secs(30)).await;
        record.ack.complete(Outcome::Delivered);
        n += 1;
        if n % CHUNK == 0 {
            progress.send_replace(n);
        }
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    feeder.await.expect("feeder");
    running.stop().await.expect("clean shutdown");
    forget_session(&url, &client_id).await;
    rate
}

async fn bare_subscriber(manual_acks: bool) -> f64 {
    let url = mqtt_url();
    let topic = unique("rate-bare");
    let (host, port) = host_port(&url);
    let mut options = rumqttc::MqttOptions::new(unique("bare"), host, port);
    options.set_manual_acks(manual_acks).set_clean_session(true);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 1000);
    client.subscribe(topic.as_str(), QoS::AtLeastOnce).await.expect("subscribe");
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await.expect("bare subscriber") {
            break;
        }
    }
    let (progress, consumed) = watch::channel(0);
    let feeder = tokio::spawn(feed(url, topic, consumed));
    let started = Instant::now();
    let mut n = 0;
    while n < MESSAGES {
        if let Event::Incoming(Packet::Publish(publish)) = eventloop.poll().await.expect("bare subscriber") {
            if manual_acks {
                client.try_ack(&publish).expect("queue a PUBACK");
            }
            n += 1;
            if n % CHUNK == 0 {
                progress.send_replace(n);
            }
        }
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    feeder.await.expect("feeder");
    rate
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run by hand with --ignored --nocapture"]
async fn throughput() {
    let bare_auto = bare_subscriber(false).await;
    let bare_manual = bare_subscriber(true).await;
    let source_311 = through_source(Protocol::V311).await;
    let source_5 = through_source(Protocol::V5).await;
    eprintln!("{MESSAGES} QoS 1 messages, msgs/s:");
    eprintln!("  bare rumqttc subscriber, automatic PUBACKs: {bare_auto:.0}");
    eprintln!("  bare rumqttc subscriber, manual PUBACKs:    {bare_manual:.0}");
    eprintln!("  MqttSource, MQTT 3.1.1:                     {source_311:.0}");
    eprintln!("  MqttSource, MQTT 5:                         {source_5:.0}");
}
