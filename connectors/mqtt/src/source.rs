//! The subscription source: a persistent session with manual
//! acknowledgements, where a message's PUBACK goes out only once its record
//! was delivered.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use switchyard_sdk::{
    Ack, Backoff, ConnectorError, Envelope, Outcome, Record, Source, SourceContext, SourceState, set_state,
};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::config::{MqttSourceConfig, Protocol, SourceSettings};
use crate::conn::{self, Client, Events, Failure, Message, Polled, Session};
use crate::envelope::{MessageRecord, MqttEnvelope};

/// How long connecting and subscribing may take together.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the PUBACKs and the DISCONNECT may take to be written at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Events the polling task may forward ahead of the source.
const EVENTS: usize = 64;
/// rumqttc's request channel: PUBACKs, the SUBSCRIBE and the DISCONNECT.
/// PUBACKs it has no room for wait in the source and are offered again.
const REQUESTS: usize = 1024;

/// Delivery identifiers come from one counter per process, so a record id is
/// never used twice by the process, even across restarts of a source.
static NEXT_DELIVERY: AtomicU64 = AtomicU64::new(1);

/// An MQTT subscription source. Build it with [`MqttSource::new`]; it connects
/// when it runs, and reconnects with backoff for as long as it runs.
///
/// # Acknowledgements and retries
///
/// MQTT has no negative acknowledgement: a broker sends an unacknowledged
/// QoS 1 message again only when the session reconnects. So the source keeps
/// every message it handed out in memory until its record's `Ack` completes:
///
/// - `Delivered` or `Reject`: the PUBACK is sent (`Reject` means the engine
///   wrote the record to its failure destination or gave it up; MQTT has no
///   dead-lettering of its own).
/// - `Retry` (or a dropped `Ack`): no PUBACK; the source hands the same
///   message out again after a delay (100 ms, doubling per retry of that
///   message up to 10 s), with `dup: true`.
///
/// Nothing is lost on the way: the broker keeps a message until its PUBACK,
/// whatever happens to the process. If the connection breaks, the source
/// forgets the unacknowledged messages of that connection (their late acks are
/// ignored) and the broker sends them again, DUP set, once the session is
/// back; at shutdown, what is not acknowledged stays in the session for the
/// next run with the same client id. Redelivery is at least once: a record
/// delivered while its connection broke comes back.
///
/// PUBACKs go out in the order records complete, not the order the messages
/// arrived. MQTT 3.1.1 and 5 (section 4.6) ask a client to acknowledge in
/// arrival order; brokers match a PUBACK by its packet identifier and
/// Mosquitto accepts any order (the tests check it). Acknowledging in arrival
/// order would hold every later message behind one that is being retried.
///
/// QoS 0 messages have no acknowledgement: they are retried from memory like
/// the others (and kept across a reconnect), but a restart loses what was not
/// delivered.
pub struct MqttSource {
    settings: SourceSettings,
    single_events: bool,
    drain_timeout: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    retry_initial: Duration,
    retry_max: Duration,
}

impl MqttSource {
    /// Checks the configuration; does not connect.
    pub fn new(config: &MqttSourceConfig) -> Result<Self, ConnectorError> {
        Ok(Self {
            settings: config.validate()?,
            single_events: false,
            drain_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
        })
    }

    /// The mapping's batch size, which decides the event's shape (see
    /// [`MqttEnvelope`]): 1 makes each event the message's payload itself.
    /// Without it, events have the batch shape.
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.single_events = batch_size == 1;
        self
    }

    /// How long shutdown waits for the acks of records handed out (10 s).
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// The wait before reconnecting: `initial`, doubling up to `max`
    /// (1 s and 30 s).
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max.max(initial);
        self
    }

    /// The wait before a retried message is handed out again: `initial`,
    /// doubling per retry of the same message, up to `max` (100 ms, 10 s).
    pub fn with_retry_delay(mut self, initial: Duration, max: Duration) -> Self {
        self.retry_initial = initial;
        self.retry_max = max.max(initial);
        self
    }

    /// The client id this source connects with under mapping `mapping`.
    pub fn client_id(&self, mapping: &str) -> String {
        self.settings.client_id.clone().unwrap_or_else(|| format!("switchyard-{mapping}"))
    }

    /// The filters as subscribed (`$share/<group>/...` with a shared group).
    pub fn filters(&self) -> &[String] {
        &self.settings.filters
    }

    fn retry_delay(&self, retries: u32) -> Duration {
        let factor = 1u32.checked_shl(retries.saturating_sub(1)).unwrap_or(u32::MAX);
        self.retry_initial.saturating_mul(factor).min(self.retry_max)
    }
}

/// Where a received message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for room on the engine's channel.
    Ready,
    /// Handed out; its record's `Ack` has not completed.
    Out,
    /// Retried; handed out again at its time.
    Waiting,
}

/// A message received and not acknowledged yet.
struct Held {
    /// The record's JSON is built from it each time it is handed out, rather
    /// than kept beside it and copied.
    message: Message,
    id: String,
    received_at: SystemTime,
    stage: Stage,
    retries: u32,
}

/// One connection.
struct Connection {
    client: Client,
    events: Events,
}

/// Why consuming stopped.
enum Ended {
    /// Shutdown was asked for, or the engine is gone.
    Shutdown,
    /// The connection broke: reconnect.
    Lost(String),
}

/// The running source: the messages it holds and its channels.
struct Task<'a> {
    source: &'a MqttSource,
    mapping: Arc<str>,
    client_id: String,
    out: mpsc::Sender<Record>,
    shutdown: CancellationToken,
    state: watch::Sender<SourceState>,
    acks: mpsc::UnboundedSender<(u64, Outcome)>,
    ack_rx: mpsc::UnboundedReceiver<(u64, Outcome)>,
    /// By delivery identifier.
    held: HashMap<u64, Held>,
    /// In arrival (or retry) order.
    ready: VecDeque<u64>,
    /// By the time they are due again.
    waiting: BTreeSet<(Instant, u64)>,
    /// PUBACKs (packet identifier, QoS) the request channel had no room for.
    unsent: VecDeque<(u16, u8)>,
}

impl Task<'_> {
    fn connected(&self, connected: bool) {
        let value = if connected { 1.0 } else { 0.0 };
        metrics::gauge!("switchyard_source_connected", "mapping" => self.mapping.to_string()).set(value);
    }

    fn count_attempt(&self, outcome: &'static str) {
        metrics::counter!("switchyard_mqtt_connections_total", "mapping" => self.mapping.to_string(), "outcome" => outcome)
            .increment(1);
    }

    fn disconnected(&self, reason: String, retry_in: Duration) {
        tracing::error!(mapping = %self.mapping, client_id = %self.client_id, %reason, ?retry_in, "MQTT source disconnected; retrying");
        self.connected(false);
        set_state(&self.state, SourceState::Disconnected(reason));
    }

    fn options(&self) -> conn::Options {
        let settings = &self.source.settings;
        conn::Options {
            endpoint: settings.endpoint.clone(),
            protocol: settings.protocol,
            client_id: self.client_id.clone(),
            keep_alive: settings.keep_alive,
            session: Session::Persistent { expiry: settings.session_expiry },
            receive_maximum: (settings.protocol == Protocol::V5).then_some(settings.max_inflight),
            max_packet_size: settings.max_packet_size,
            manual_acks: true,
            // The source publishes nothing.
            outgoing_inflight: 1,
            requests: REQUESTS,
            events: EVENTS,
        }
    }

    fn receive(&mut self, message: Message) {
        let delivery = NEXT_DELIVERY.fetch_add(1, Ordering::Relaxed);
        let received_at = SystemTime::now();
        // Unique in the process; the topic and packet id make it readable.
        let id = format!("{}:{}:{delivery}", message.topic, message.pkid);
        self.held.insert(delivery, Held { message, id, received_at, stage: Stage::Ready, retries: 0 });
        self.ready.push_back(delivery);
    }

    /// The record of the next ready message.
    fn hand_out(&mut self) -> Option<Record> {
        while let Some(delivery) = self.ready.pop_front() {
            let Some(held) = self.held.get_mut(&delivery) else { continue };
            held.stage = Stage::Out;
            return Some(Record {
                id: held.id.clone(),
                // Retried messages come back later, and a shared subscription
                // spreads a topic over replicas: no order is promised.
                scope: None,
                key: None,
                data: serde_json::Value::Null,
                deferred: Some(Box::new(MessageRecord {
                    message: held.message.clone(),
                    received_at: held.received_at,
                })),
                size: held.message.payload.len(),
                created_at: held.received_at,
                ack: Ack::channel(delivery, self.acks.clone()),
            });
        }
        None
    }

    /// Acts on the outcome of one handed-out record.
    fn settle(&mut self, delivery: u64, outcome: Outcome) {
        let Some(held) = self.held.get_mut(&delivery) else {
            // From a connection that broke since: the broker sends the message
            // again, and that copy is acknowledged on its own.
            tracing::debug!(mapping = %self.mapping, delivery, "ignoring the ack of a message from an earlier connection");
            return;
        };
        if held.stage != Stage::Out {
            return;
        }
        match outcome {
            Outcome::Delivered | Outcome::Reject(_) => {
                if let Outcome::Reject(reason) = &outcome {
                    tracing::debug!(mapping = %self.mapping, id = %held.id, %reason, "rejected: acknowledging (MQTT has no dead-lettering)");
                }
                if let Some(held) = self.held.remove(&delivery)
                    && held.message.qos > 0
                {
                    self.unsent.push_back((held.message.pkid, held.message.qos));
                }
            }
            Outcome::Retry(reason) => {
                held.retries += 1;
                held.stage = Stage::Waiting;
                let delay = self.source.retry_delay(held.retries);
                tracing::debug!(mapping = %self.mapping, id = %held.id, %reason, ?delay, "retry: handing the message out again later");
                metrics::counter!("switchyard_mqtt_retries_total", "mapping" => self.mapping.to_string()).increment(1);
                self.waiting.insert((Instant::now() + delay, delivery));
            }
        }
    }

    fn settle_waiting(&mut self) {
        while let Ok((delivery, outcome)) = self.ack_rx.try_recv() {
            self.settle(delivery, outcome);
        }
    }

    /// Offers the PUBACKs not yet taken to the request channel, in order.
    fn flush_acks(&mut self, client: &Client) {
        while let Some(&(pkid, qos)) = self.unsent.front() {
            if !client.ack(pkid, qos) {
                break;
            }
            self.unsent.pop_front();
        }
    }

    /// Moves the retried messages that are due back to the ready queue.
    fn release_due(&mut self) {
        let now = Instant::now();
        while let Some(&(at, delivery)) = self.waiting.first() {
            if at > now {
                break;
            }
            self.waiting.pop_first();
            if let Some(held) = self.held.get_mut(&delivery) {
                held.stage = Stage::Ready;
                // It may have been seen before: what DUP says.
                held.message.dup = true;
                self.ready.push_back(delivery);
            }
        }
    }

    /// After a connection broke: its packet identifiers mean nothing on the
    /// next one, and the broker sends its unacknowledged messages again.
    /// QoS 0 messages are kept: nobody would send them again.
    fn forget_connection(&mut self) {
        self.held.retain(|_, held| held.message.qos == 0);
        let held = &self.held;
        self.ready.retain(|delivery| held.contains_key(delivery));
        self.waiting.retain(|(_, delivery)| held.contains_key(delivery));
        self.unsent.clear();
    }

    /// Handed-out messages whose acknowledgement the broker waits for.
    fn awaiting_acks(&self) -> usize {
        self.held.values().filter(|held| held.stage == Stage::Out && held.message.qos > 0).count()
    }

    /// Connects and, on the run's first connection or when the broker has no
    /// session, subscribes. The first connection always subscribes, so a
    /// changed topic list takes effect; later ones rely on the session.
    async fn open(&mut self, first: bool) -> Result<Connection, Failure> {
        let settings = &self.source.settings;
        let (client, mut events) = conn::open(&self.options())?;
        let session_present = loop {
            match events.recv().await? {
                Polled::ConnAck { session_present } => break session_present,
                Polled::Publish(message) => self.receive(message),
                _ => {}
            }
        };
        if first || !session_present {
            if !client.subscribe(&settings.filters, settings.qos) {
                return Err(Failure { text: "the MQTT client took no SUBSCRIBE request".into(), refused: false });
            }
            // A resumed session's queued messages may arrive before the SUBACK.
            let granted = loop {
                match events.recv().await? {
                    Polled::SubAck { granted } => break granted,
                    Polled::Publish(message) => self.receive(message),
                    _ => {}
                }
            };
            self.check_granted(&granted)?;
        }
        tracing::debug!(mapping = %self.mapping, session_present, "MQTT session open");
        Ok(Connection { client, events })
    }

    fn check_granted(&self, granted: &[Result<u8, String>]) -> Result<(), Failure> {
        let settings = &self.source.settings;
        let endpoint = &settings.endpoint;
        for (filter, granted) in settings.filters.iter().zip(granted) {
            match granted {
                Err(why) => {
                    return Err(Failure {
                        text: format!("the MQTT broker at {endpoint} refused the subscription to {filter:?}: {why}"),
                        refused: true,
                    });
                }
                // The broker would send at QoS 0 and forget: refuse rather
                // than silently lose messages.
                Ok(qos) if *qos < settings.qos => {
                    return Err(Failure {
                        text: format!(
                            "the MQTT broker at {endpoint} granted QoS {qos} for {filter:?} where {} was asked; set qos: 0 to accept losing messages",
                            settings.qos
                        ),
                        refused: true,
                    });
                }
                Ok(_) => {}
            }
        }
        if granted.len() != settings.filters.len() {
            return Err(Failure {
                text: format!(
                    "the MQTT broker at {endpoint} answered {} of {} subscriptions",
                    granted.len(),
                    settings.filters.len()
                ),
                refused: false,
            });
        }
        Ok(())
    }

    /// Hands records out and acknowledges them until shutdown or until the
    /// connection breaks.
    async fn consume(&mut self, connection: &mut Connection) -> Ended {
        let limit = usize::from(self.source.settings.max_inflight);
        // A clone, as a reserved slot borrows its sender into the handler.
        let out = self.out.clone();
        loop {
            self.flush_acks(&connection.client);
            let retry_at = self.waiting.first().map(|(at, _)| *at);
            // A full buffer stops reading: the polling task then stops
            // reading the socket, and the broker holds the rest. With QoS 1
            // the broker's in-flight window stops it before that.
            let reading = self.ready.len() < limit;
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Ended::Shutdown,
                Some((delivery, outcome)) = self.ack_rx.recv() => {
                    self.settle(delivery, outcome);
                    self.settle_waiting();
                }
                _ = sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => self.release_due(),
                reserved = out.reserve(), if !self.ready.is_empty() => match reserved {
                    Ok(permit) => {
                        if let Some(record) = self.hand_out() {
                            permit.send(record);
                        }
                        // Whatever else is ready goes out while the channel
                        // has room, without another round of this select:
                        // each round is futures polled and, often, a task
                        // woken on the other core.
                        while !self.ready.is_empty() {
                            let Ok(permit) = out.try_reserve() else { break };
                            match self.hand_out() {
                                Some(record) => permit.send(record),
                                None => break,
                            }
                        }
                    }
                    // The engine is gone: same as a shutdown.
                    Err(_) => return Ended::Shutdown,
                },
                event = connection.events.recv(), if reading => {
                    // The messages already waiting come in together.
                    let mut event = Some(event);
                    while let Some(polled) = event.take() {
                        match polled {
                            Ok(Polled::Publish(message)) => self.receive(message),
                            Ok(_) => {}
                            Err(failure) => return Ended::Lost(failure.text),
                        }
                        if self.ready.len() < limit {
                            event = connection.events.try_recv();
                        }
                    }
                }
            }
        }
    }

    /// Waits (bounded) for the acks of what was handed out, writes their
    /// PUBACKs, then DISCONNECTs normally, which keeps the session: what is
    /// still unacknowledged waits there for the next run.
    async fn close(&mut self, mut connection: Connection) {
        let drain = sleep_until(Instant::now() + self.source.drain_timeout);
        tokio::pin!(drain);
        loop {
            self.flush_acks(&connection.client);
            if self.awaiting_acks() == 0 {
                break;
            }
            tokio::select! {
                biased;
                Some((delivery, outcome)) = self.ack_rx.recv() => self.settle(delivery, outcome),
                event = connection.events.recv() => match event {
                    // Not handed out, not acknowledged: the broker sends it
                    // to the next session.
                    Ok(_) => {}
                    Err(failure) => {
                        tracing::warn!(mapping = %self.mapping, reason = %failure.text, "shutdown: the connection broke; the broker keeps what was not acknowledged");
                        return;
                    }
                },
                _ = &mut drain => {
                    tracing::warn!(
                        mapping = %self.mapping, in_flight = self.awaiting_acks(),
                        "shutdown: gave up waiting for acks; those messages stay in the session"
                    );
                    break;
                }
            }
        }
        // PUBACKs and the DISCONNECT share rumqttc's request channel, in order:
        // once the DISCONNECT is written, every PUBACK before it was. Written
        // is not read, though: a broker that sees the next connection of this
        // client id first drops the old one with whatever it had not read
        // yet (Mosquitto does), and those messages come back. The broker
        // closes the connection once it has read the DISCONNECT, so the
        // source waits for that.
        let deadline = sleep_until(Instant::now() + CLOSE_TIMEOUT);
        tokio::pin!(deadline);
        let mut disconnecting = false;
        let mut disconnected = false;
        loop {
            self.flush_acks(&connection.client);
            if self.unsent.is_empty() && !disconnecting {
                disconnecting = connection.client.disconnect();
            }
            tokio::select! {
                event = connection.events.recv() => match event {
                    Ok(Polled::DisconnectSent) => disconnected = true,
                    Ok(_) => {}
                    Err(failure) => {
                        if !disconnected {
                            tracing::debug!(mapping = %self.mapping, reason = %failure.text, "shutdown: the connection ended before the DISCONNECT");
                        }
                        break;
                    }
                },
                _ = &mut deadline => {
                    tracing::warn!(
                        mapping = %self.mapping, disconnected,
                        "shutdown: the broker did not close the connection in time; closing the socket"
                    );
                    break;
                }
            }
        }
    }

    /// Waits before reconnecting; false when shutdown came first.
    async fn wait(&mut self, wait: Duration) -> bool {
        let sleep = sleep_until(Instant::now() + wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return false,
                // QoS 0 messages settle; the others are forgotten already.
                Some((delivery, outcome)) = self.ack_rx.recv() => self.settle(delivery, outcome),
                _ = &mut sleep => return true,
            }
        }
    }

    async fn run(&mut self) {
        let settings = &self.source.settings;
        let mut backoff = Backoff::new(self.source.backoff_initial, self.source.backoff_max);
        let shutdown = self.shutdown.clone();
        let mut first = true;
        loop {
            let opened = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                opened = tokio::time::timeout(OPEN_TIMEOUT, self.open(first)) => opened,
            };
            let failure = match opened {
                Ok(Ok(mut connection)) => {
                    first = false;
                    self.count_attempt("ok");
                    backoff.reset();
                    tracing::info!(
                        mapping = %self.mapping, client_id = %self.client_id, endpoint = %settings.endpoint,
                        filters = ?settings.filters, protocol = settings.protocol.label(), "MQTT source subscribed"
                    );
                    self.connected(true);
                    set_state(&self.state, SourceState::Running);
                    match self.consume(&mut connection).await {
                        Ended::Shutdown => {
                            self.close(connection).await;
                            break;
                        }
                        Ended::Lost(reason) => reason,
                    }
                }
                Ok(Err(failure)) => {
                    self.count_attempt("error");
                    failure.text
                }
                Err(_) => {
                    self.count_attempt("error");
                    format!(
                        "no CONNACK and SUBACK from the MQTT broker at {} within {OPEN_TIMEOUT:?}",
                        settings.endpoint
                    )
                }
            };
            self.forget_connection();
            let retry_in = backoff.next_wait();
            self.disconnected(failure, retry_in);
            if !self.wait(retry_in).await {
                break;
            }
        }
        self.connected(false);
        set_state(&self.state, SourceState::Stopped);
        tracing::info!(mapping = %self.mapping, client_id = %self.client_id, "MQTT source stopped");
    }
}

#[async_trait]
impl Source for MqttSource {
    fn envelope(&self) -> Arc<dyn Envelope> {
        Arc::new(if self.single_events { MqttEnvelope::single() } else { MqttEnvelope::batch() })
    }

    /// MQTT records carry no scope.
    fn scoped(&self) -> bool {
        false
    }

    /// Never fails on broker trouble: refused credentials, a refused
    /// subscription or a lost connection show as `Disconnected` and are
    /// retried until shutdown.
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), ConnectorError> {
        let SourceContext { mapping, out, shutdown, state } = cx;
        let (acks, ack_rx) = mpsc::unbounded_channel();
        let client_id = self.client_id(&mapping);
        let mut task = Task {
            source: &self,
            mapping,
            client_id,
            out,
            shutdown,
            state,
            acks,
            ack_rx,
            held: HashMap::new(),
            ready: VecDeque::new(),
            waiting: BTreeSet::new(),
            unsent: VecDeque::new(),
        };
        task.run().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::json;

    use super::*;

    fn source() -> MqttSource {
        let config: MqttSourceConfig =
            serde_json::from_value(json!({"url": "mqtt://127.0.0.1:1", "topics": ["t/#"]})).unwrap();
        MqttSource::new(&config).unwrap()
    }

    #[test]
    fn retry_delays_double_per_message() {
        let source = source();
        let delays: Vec<u128> = [1, 2, 3, 8, 100].iter().map(|&n| source.retry_delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 10_000, 10_000]);
    }

    #[test]
    fn the_client_id_defaults_to_the_mapping() {
        assert_eq!(source().client_id("telemetry"), "switchyard-telemetry");
        assert!(
            matches!(source().envelope().event(&[&json!({"data": "e30="})]), serde_json::Value::Object(o) if o.contains_key("eventSource"))
        );
        assert_eq!(source().with_batch_size(1).envelope().event(&[&json!({"data": "e30="})]), json!({}));
    }

    /// The bookkeeping without a broker: outcomes, retries and a lost
    /// connection.
    #[tokio::test]
    async fn outcomes_move_messages_between_stages() {
        let source = source().with_retry_delay(Duration::ZERO, Duration::ZERO);
        let (out, _rx) = mpsc::channel(8);
        let (state, _state_rx) = watch::channel(SourceState::Starting);
        let (acks, ack_rx) = mpsc::unbounded_channel();
        let mut task = Task {
            source: &source,
            mapping: Arc::from("m"),
            client_id: "c".into(),
            out,
            shutdown: CancellationToken::new(),
            state,
            acks,
            ack_rx,
            held: HashMap::new(),
            ready: VecDeque::new(),
            waiting: BTreeSet::new(),
            unsent: VecDeque::new(),
        };
        let message = |pkid, qos| Message {
            topic: "t/a".into(),
            payload: Bytes::from_static(b"{}"),
            qos,
            retain: false,
            dup: false,
            pkid,
            properties: None,
        };
        task.receive(message(5, 1));
        task.receive(message(6, 1));
        task.receive(message(0, 0));
        let records: Vec<Record> = std::iter::from_fn(|| task.hand_out()).collect();
        assert_eq!(records.len(), 3);
        assert!(records[0].id.starts_with("t/a:5:") && records[0].id != records[1].id);

        let mut records = records.into_iter();
        let (first, second, third) = (records.next().unwrap(), records.next().unwrap(), records.next().unwrap());
        second.ack.complete(Outcome::Delivered);
        drop(first.ack); // a retry
        third.ack.complete(Outcome::Reject("gave up".into()));
        task.settle_waiting();
        assert_eq!(task.unsent, [(6, 1)], "only the delivered QoS 1 message is acknowledged; QoS 0 needs none");
        assert_eq!(task.waiting.len(), 1);

        task.release_due();
        let again = task.hand_out().expect("the retried message comes back");
        assert!(again.id.starts_with("t/a:5:") && again.value()["dup"] == json!(true));
        assert_eq!(task.awaiting_acks(), 1);

        task.forget_connection();
        assert!(task.held.is_empty() && task.unsent.is_empty(), "QoS 1 messages of a broken connection are forgotten");
        again.ack.complete(Outcome::Delivered);
        task.settle_waiting();
        assert!(task.unsent.is_empty(), "a late ack from a broken connection sends no PUBACK");
    }
}
