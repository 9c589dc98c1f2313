//! The JetStream source: a durable pull consumer whose messages are settled
//! one by one from the outcomes of their records' `Ack`s.
//!
//! One task owns everything: it pulls into a subscription of its own, turns
//! each message into a record, hands records to the engine as the engine
//! takes them, keeps unsettled messages alive with in-progress acks, and
//! settles outcomes by publishing to each message's `$JS.ACK` subject.
//!
//! Naks and terms carry a reply subject, so the server confirms them: the
//! order of a subject's retries and the end of a failed message depend on
//! them. Acks go without one. A lost ack costs a redelivery after the ack
//! wait, never a message, and a confirmation per message took as much of
//! the server's time as the deliveries themselves.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy};
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::{self, Stream};
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{Client, Event, Message, StatusCode, Subject, Subscriber};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use switchyard_sdk::{
    Ack, Backoff, ConnectorError, Deferred, Envelope, Outcome, Record, Source, SourceContext, SourceState, set_state,
};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::client;
use crate::config::{NatsSourceConfig, Servers};
use crate::envelope::{Delivery, MessageRecord, NatsEnvelope, message_data};

/// How long connecting, checking the stream and the consumer and
/// subscribing may take together before the attempt counts as failed.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);
/// The most messages one pull request asks for.
const PULL_BATCH: usize = 256;
/// How long the server keeps a pull request waiting for messages.
const PULL_EXPIRES: Duration = Duration::from_secs(30);
/// The server sends a heartbeat this often while a pull request waits; two
/// missed ones mean the request is gone (a server restart) and another is sent.
const PULL_HEARTBEAT: Duration = Duration::from_secs(5);
/// Pause before pulling again after the server turned a pull request down.
const PULL_REFUSED_PAUSE: Duration = Duration::from_secs(1);
/// How long a settle waits for the server's confirmation before it is sent
/// again.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Sends of one settle before giving up on it: the server then redelivers
/// the message once its ack wait ends.
const SETTLE_ATTEMPTS: u32 = 5;
/// How long one publish may wait for room in the client's outgoing queue;
/// longer means the connection is stuck, and the loop must not stall on it.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// The most messages or outcomes taken in one go before the loop looks at
/// everything else again.
const DRAIN_AT_ONCE: usize = 256;
/// How long each closing step may take at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The nak delay of a first failure, doubling with each delivery.
const NAK_DELAY_BASE: Duration = Duration::from_secs(1);
const NAK_DELAY_MAX: Duration = Duration::from_secs(60);

/// A NATS JetStream source. Build it with [`NatsSource::new`]; it connects
/// when it runs, and keeps trying for as long as it runs.
pub struct NatsSource {
    servers: Servers,
    config: NatsSourceConfig,
    drain_timeout: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
}

impl NatsSource {
    /// Checks the configuration; does not connect.
    pub fn new(config: &NatsSourceConfig) -> Result<Self, ConnectorError> {
        let servers = config.validate()?;
        Ok(Self {
            servers,
            config: config.clone(),
            drain_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
        })
    }

    /// How long shutdown waits for the acks of records handed out (10 s);
    /// what is still unsettled then is nak'd for immediate redelivery.
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// The wait before setting up again after a failure (unreachable server,
    /// missing stream, consumer deleted): `initial`, doubling up to `max`
    /// (1 s and 30 s).
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max.max(initial);
        self
    }

    fn stream(&self) -> &str {
        &self.config.stream
    }

    fn consumer(&self) -> &str {
        &self.config.consumer
    }

    /// How often in-progress acks, resends and the pull watchdog run: a sixth
    /// of the ack wait (so a message is touched at least every half of it),
    /// at most a second.
    fn tick(&self) -> Duration {
        (self.config.ack_wait / 6).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// The filter subjects as the consumer's config writes them.
    fn filter(&self) -> (String, Vec<String>) {
        match self.config.subjects.as_slice() {
            [] => (String::new(), Vec::new()),
            [one] => (one.clone(), Vec::new()),
            many => (String::new(), many.to_vec()),
        }
    }
}

/// The nak delay after `delivered` deliveries: 1 s, doubling, at most 60 s.
fn nak_delay(delivered: u64) -> Duration {
    let doublings = u32::try_from(delivered.saturating_sub(1)).unwrap_or(u32::MAX).min(6);
    (NAK_DELAY_BASE * 2u32.pow(doublings)).min(NAK_DELAY_MAX)
}

/// `-NAK` asks for redelivery now, `-NAK {"delay": nanos}` after the delay.
fn nak_payload(delay: Option<Duration>) -> Bytes {
    match delay {
        Some(delay) => Bytes::from(format!("-NAK {{\"delay\":{}}}", delay.as_nanos())),
        None => Bytes::from_static(b"-NAK"),
    }
}

/// `(major, minor)` of a server version such as `2.10.7` or `2.11.0-beta`.
fn version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split(['.', '-']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The client, once connected; async-nats keeps it connected from then on.
struct Conn {
    client: Client,
    /// Where the server's confirmations of settles arrive: `<prefix>.<token>`.
    confirms: Subscriber,
    confirm_prefix: String,
}

/// The pull subscription of a consumer that exists.
struct Session {
    inbox: Subscriber,
    inbox_subject: Subject,
    pull_subject: String,
    /// Messages asked for and neither received nor given up by the server.
    outstanding: usize,
    /// Anything (message or heartbeat) last came in, or the last pull left.
    last_activity: Instant,
    /// No pull before this (after the server turned one down).
    not_before: Instant,
}

/// A message received and not settled yet.
struct InFlight {
    reply: Subject,
    /// Ordered only: the subject, the scope whose retries go in order.
    subject: Option<Arc<str>>,
    stream_sequence: u64,
    /// Deliveries so far: the server's count, plus the source's own
    /// redeliveries of an ordered retry.
    delivered: u64,
    /// Ordered only: the record again, for handing it out once more.
    again: Option<Again>,
    /// Ordered only: the engine asked for a retry, and the record waits to
    /// be handed out again.
    retry: bool,
    /// Handed to the engine and its outcome still open. A retry of a record
    /// never handed out releases the message at once, without a delay.
    handed: bool,
    /// The last in-progress ack (or the receipt).
    touched: Instant,
}

/// Ordered only: the messages in flight of one subject.
#[derive(Default)]
struct Lane {
    /// By stream sequence (and token: a redelivery may overlap its earlier
    /// delivery).
    entries: BTreeSet<(u64, u64)>,
    /// Handed to the engine, outcome still open.
    pending: usize,
    /// The engine asked for a retry; waiting to be handed out again.
    retries: usize,
}

/// What an ordered record is made of, kept to hand it out again.
struct Again {
    id: String,
    data: serde_json::Value,
    size: usize,
    created_at: std::time::SystemTime,
}

/// A settle not done yet: an ack not sent yet, or a nak or term the server
/// has not confirmed.
struct Settling {
    reply: Subject,
    payload: Bytes,
    kind: &'static str,
    attempts: u32,
    /// When to send (again).
    due: Instant,
}

/// What woke the loop.
enum Wake<'a> {
    Shutdown,
    Outcome(u64, Outcome),
    Confirmed(Option<Message>),
    Event(Event),
    Handed(Option<mpsc::Permit<'a, Record>>),
    Delivery(Option<Message>),
    Tick,
    Setup,
}

/// Everything the running source task owns.
struct Task<'a> {
    source: &'a NatsSource,
    mapping: Arc<str>,
    out: mpsc::Sender<Record>,
    shutdown: CancellationToken,
    state: watch::Sender<SourceState>,
    acks: mpsc::UnboundedSender<(u64, Outcome)>,
    ack_rx: mpsc::UnboundedReceiver<(u64, Outcome)>,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    conn: Option<Conn>,
    session: Option<Session>,
    /// Whether the client is connected now, from its events.
    connected: bool,
    in_flight: HashMap<u64, InFlight>,
    /// Ordered only: the messages in flight of each subject.
    by_subject: HashMap<Arc<str>, Lane>,
    settling: HashMap<u64, Settling>,
    /// Records received and not yet taken by the engine, oldest first, with
    /// their tokens.
    ready: VecDeque<(u64, Record)>,
    next_token: u64,
}

impl Task<'_> {
    fn gauge(&self, connected: bool) {
        let value = if connected { 1.0 } else { 0.0 };
        metrics::gauge!("switchyard_source_connected", "mapping" => self.mapping.to_string()).set(value);
    }

    fn count_setup(&self, outcome: &'static str) {
        metrics::counter!("switchyard_nats_connections_total", "mapping" => self.mapping.to_string(), "outcome" => outcome)
            .increment(1);
    }

    fn count_settle(&self, kind: &'static str, outcome: &'static str) {
        metrics::counter!("switchyard_nats_settles_total", "mapping" => self.mapping.to_string(), "kind" => kind, "outcome" => outcome)
            .increment(1);
    }

    fn running(&self) {
        self.gauge(true);
        if set_state(&self.state, SourceState::Running) {
            tracing::info!(mapping = %self.mapping, stream = self.source.stream(), consumer = self.source.consumer(),
                servers = %self.source.servers, "NATS source consuming");
        }
    }

    fn disconnected(&self, reason: String) {
        self.gauge(false);
        set_state(&self.state, SourceState::Disconnected(reason));
    }

    /// Connects when not connected yet, makes sure the stream and the
    /// consumer are there as configured, and subscribes for pulls.
    async fn open(&mut self) -> Result<Session, String> {
        let source = self.source;
        if self.conn.is_none() {
            let name = format!("switchyard {}", self.mapping);
            let client = client::connect(&source.servers, &name, Some(self.events_tx.clone())).await?;
            let confirm_prefix = client.new_inbox();
            let confirms = client
                .subscribe(format!("{confirm_prefix}.*"))
                .await
                .map_err(|e| format!("subscribing on {}: {e}", source.servers))?;
            self.connected = true;
            self.conn = Some(Conn { client, confirms, confirm_prefix });
        }
        let Some(client) = self.conn.as_ref().map(|conn| conn.client.clone()) else {
            return Err("internal: no client".into());
        };
        let js = jetstream::new(client.clone());
        let stream = self.ensure_stream(&js).await?;
        self.ensure_consumer(&client, &stream).await?;
        let inbox_subject = Subject::from(client.new_inbox());
        let inbox = client
            .subscribe(inbox_subject.clone())
            .await
            .map_err(|e| format!("subscribing on {}: {e}", source.servers))?;
        let now = Instant::now();
        Ok(Session {
            inbox,
            inbox_subject,
            pull_subject: format!("$JS.API.CONSUMER.MSG.NEXT.{}.{}", source.stream(), source.consumer()),
            outstanding: 0,
            last_activity: now,
            not_before: now,
        })
    }

    async fn ensure_stream(&self, js: &jetstream::Context) -> Result<Stream, String> {
        let source = self.source;
        let (name, servers) = (source.stream(), &source.servers);
        match js.get_stream(name).await {
            Ok(stream) => Ok(stream),
            Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
            {
                if !source.config.create_stream {
                    return Err(format!(
                        "stream {name:?} not found on {servers}: create it, or set create_stream: true"
                    ));
                }
                let config = stream::Config {
                    name: name.to_string(),
                    subjects: source.config.subjects.clone(),
                    ..stream::Config::default()
                };
                let stream = js
                    .create_stream(config)
                    .await
                    .map_err(|e| format!("creating stream {name:?} on {servers}: {e}"))?;
                tracing::info!(mapping = %self.mapping, stream = name, subjects = ?source.config.subjects, "created the JetStream stream");
                Ok(stream)
            }
            Err(e) => Err(format!("stream {name:?} on {servers}: {e} (is JetStream enabled?)")),
        }
    }

    /// Creates the durable pull consumer, or brings an existing one to the
    /// configured filter subjects, ack wait and max ack pending, keeping
    /// whatever else its owner set (max deliveries, backoff, description).
    async fn ensure_consumer(&self, client: &Client, stream: &Stream) -> Result<(), String> {
        let source = self.source;
        let (name, stream_name, servers) = (source.consumer(), source.stream(), &source.servers);
        if source.config.subjects.len() > 1 {
            let server = client.server_info().version;
            if version(&server).is_some_and(|v| v < (2, 10)) {
                return Err(format!(
                    "nats-server {server} at {servers} takes one filter subject per consumer; \
                     several subjects need nats-server 2.10 or later"
                ));
            }
        }
        let (filter_subject, filter_subjects) = source.filter();
        let wanted_max_ack_pending = i64::from(source.config.max_ack_pending);
        let existing = match stream.consumer_info(name).await {
            Ok(info) => Some(info.config),
            Err(e) if e.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => None,
            Err(e) => return Err(format!("consumer {name:?} of stream {stream_name:?} on {servers}: {e}")),
        };
        let (config, action) = match existing {
            None => (
                consumer::Config {
                    durable_name: Some(name.to_string()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: source.config.ack_wait,
                    max_ack_pending: wanted_max_ack_pending,
                    filter_subject: filter_subject.clone(),
                    filter_subjects: filter_subjects.clone(),
                    ..consumer::Config::default()
                },
                "created",
            ),
            Some(mut config) => {
                if config.deliver_subject.is_some() {
                    return Err(format!(
                        "consumer {name:?} of stream {stream_name:?} is a push consumer; Switchyard needs a pull \
                         consumer: delete it or name another one"
                    ));
                }
                if config.ack_policy != AckPolicy::Explicit {
                    return Err(format!(
                        "consumer {name:?} of stream {stream_name:?} has ack policy {:?}, which cannot be changed; \
                         Switchyard acks each message (explicit): delete it or name another one",
                        config.ack_policy
                    ));
                }
                let current = filters(&config.filter_subject, &config.filter_subjects);
                let same = current == source.config.subjects
                    && config.ack_wait == source.config.ack_wait
                    && config.max_ack_pending == wanted_max_ack_pending;
                if same {
                    return Ok(());
                }
                tracing::info!(
                    mapping = %self.mapping, consumer = name, stream = stream_name,
                    from = ?(current, config.ack_wait, config.max_ack_pending),
                    to = ?(&source.config.subjects, source.config.ack_wait, wanted_max_ack_pending),
                    "updating the consumer's filter subjects, ack wait and max ack pending"
                );
                config.filter_subject = filter_subject.clone();
                config.filter_subjects = filter_subjects.clone();
                config.ack_wait = source.config.ack_wait;
                config.max_ack_pending = wanted_max_ack_pending;
                (config, "updated")
            }
        };
        // Creating a durable that exists updates it (nats-server 2.9 and later
        // alike), or fails with the server's reason when it may not.
        let created = stream.create_consumer(config).await.map_err(|e| {
            format!("consumer {name:?} of stream {stream_name:?} on {servers} could not be {action}: {e}")
        })?;
        let applied = &created.cached_info().config;
        if filters(&applied.filter_subject, &applied.filter_subjects) != source.config.subjects {
            return Err(format!(
                "nats-server at {servers} did not apply the filter subjects {:?} to consumer {name:?} (it has {:?})",
                source.config.subjects,
                filters(&applied.filter_subject, &applied.filter_subjects)
            ));
        }
        tracing::info!(mapping = %self.mapping, consumer = name, stream = stream_name, "{action} the durable pull consumer");
        Ok(())
    }

    /// Asks for more messages when the engine took everything received,
    /// nothing much is outstanding and the consumer has room.
    async fn pull(&mut self) {
        let limit = self.source.config.max_ack_pending as usize;
        let batch = PULL_BATCH.min(limit);
        let held = self.in_flight.len() + self.settling.len();
        let (Some(conn), Some(session)) = (self.conn.as_ref(), self.session.as_mut()) else { return };
        let now = Instant::now();
        if !self.connected || !self.ready.is_empty() || now < session.not_before || session.outstanding > batch / 2 {
            return;
        }
        let room = limit.saturating_sub(held + session.outstanding);
        let n = room.min(batch);
        if n == 0 {
            return;
        }
        let request = serde_json::json!({
            "batch": n,
            "expires": PULL_EXPIRES.as_nanos() as u64,
            "idle_heartbeat": PULL_HEARTBEAT.as_nanos() as u64,
        });
        let sent = tokio::time::timeout(
            PUBLISH_TIMEOUT,
            conn.client.publish_with_reply(
                session.pull_subject.clone(),
                session.inbox_subject.clone(),
                Bytes::from(request.to_string()),
            ),
        )
        .await;
        match sent {
            Ok(Ok(())) => {
                session.outstanding += n;
                session.last_activity = now;
            }
            // The connection is in trouble: its events say so; try again on
            // the next tick.
            Ok(Err(e)) => {
                tracing::debug!(mapping = %self.mapping, error = %e, "could not send a pull request");
                session.not_before = now + PULL_REFUSED_PAUSE;
            }
            Err(_) => session.not_before = now + PULL_REFUSED_PAUSE,
        }
    }

    /// A message on the pull subscription: a delivery, a heartbeat, or the
    /// server's word on a pull request. Err when the consumer is gone.
    fn delivery(&mut self, session: &mut Session, message: Message) -> Result<(), String> {
        let source = self.source;
        let now = Instant::now();
        session.last_activity = now;
        let status = message.status.unwrap_or(StatusCode::OK);
        let pending_header = |message: &Message| {
            message.headers.as_ref().and_then(|h| h.get("Nats-Pending-Messages")).and_then(|v| v.as_str().parse().ok())
        };
        match status {
            StatusCode::OK => {}
            StatusCode::IDLE_HEARTBEAT => return Ok(()),
            // The request expired or was answered with what there was: the
            // header says how much of it was left unfilled.
            StatusCode::TIMEOUT | StatusCode::NOT_FOUND => {
                session.outstanding =
                    pending_header(&message).map_or(0, |left| session.outstanding.saturating_sub(left));
                return Ok(());
            }
            StatusCode::REQUEST_TERMINATED => {
                let description = message.description.clone().unwrap_or_default();
                if description.eq_ignore_ascii_case("consumer deleted") {
                    return Err(format!(
                        "consumer {:?} was deleted from stream {:?} on {}",
                        source.consumer(),
                        source.stream(),
                        source.servers
                    ));
                }
                if description.to_ascii_lowercase().contains("push based") {
                    return Err(format!("consumer {:?} became a push consumer", source.consumer()));
                }
                tracing::warn!(mapping = %self.mapping, %description, "the server ended a pull request; pulling again");
                session.outstanding =
                    pending_header(&message).map_or(0, |left| session.outstanding.saturating_sub(left));
                session.not_before = now + PULL_REFUSED_PAUSE;
                return Ok(());
            }
            StatusCode::NO_RESPONDERS => {
                return Err(format!(
                    "nothing answers pulls of consumer {:?} of stream {:?} on {} (deleted, or JetStream unavailable)",
                    source.consumer(),
                    source.stream(),
                    source.servers
                ));
            }
            other => {
                tracing::warn!(mapping = %self.mapping, status = %other, description = ?message.description,
                    "unexpected status on the pull subscription; pulling again");
                session.outstanding = 0;
                session.not_before = now + PULL_REFUSED_PAUSE;
                return Ok(());
            }
        }
        session.outstanding = session.outstanding.saturating_sub(1);
        let Some(reply) = message.reply.clone() else {
            tracing::warn!(mapping = %self.mapping, subject = %message.subject, "a delivery without a reply subject; ignored");
            return Ok(());
        };
        let Some(delivery) = Delivery::from_reply(&reply) else {
            tracing::warn!(mapping = %self.mapping, %reply, "not a JetStream delivery; ignored");
            return Ok(());
        };
        let token = self.next_token;
        self.next_token += 1;
        let subject: Option<Arc<str>> = source.config.ordered.then(|| Arc::from(message.subject.as_str()));
        if let Some(subject) = &subject {
            self.by_subject.entry(subject.clone()).or_default().entries.insert((delivery.stream_sequence, token));
        }
        let id = format!("{}:{}", delivery.stream, delivery.stream_sequence);
        let (size, created_at) = (message.payload.len(), delivery.published());
        let (stream_sequence, delivered) = (delivery.stream_sequence, delivery.delivered);
        // Ordered records keep their JSON for a rewind (see `again`); the
        // others are written into the event straight from the message.
        let (data, deferred) = if subject.is_some() {
            (message_data(&message.subject, &delivery, message.headers.as_ref(), &message.payload), None)
        } else {
            let record = MessageRecord {
                subject: message.subject,
                delivery,
                headers: message.headers,
                payload: message.payload,
            };
            (serde_json::Value::Null, Some(Box::new(record) as Box<dyn Deferred>))
        };
        let record = Record {
            id,
            scope: subject.clone(),
            key: None,
            data,
            size,
            created_at,
            deferred,
            ack: Ack::channel(token, self.acks.clone()),
        };
        let again = subject.is_some().then(|| Again {
            id: record.id.clone(),
            data: record.data.clone(),
            size: record.size,
            created_at: record.created_at,
        });
        self.in_flight.insert(
            token,
            InFlight { reply, subject, stream_sequence, delivered, again, retry: false, handed: false, touched: now },
        );
        self.insert_ready(token, record);
        Ok(())
    }

    /// Turns an outcome into an ack, nak or term and sends it. `now`
    /// releases a retried message for immediate redelivery.
    ///
    /// Ordered, a retry is not nak'd: it waits until every older message of
    /// its subject is settled or waits too, and the source hands them out
    /// again itself, in stream order (see `rewind`).
    async fn settle(&mut self, token: u64, outcome: Outcome, now: bool) {
        let Some(entry) = self.in_flight.get_mut(&token) else {
            // Settled already (released at shutdown, say).
            return;
        };
        let subject = entry.subject.clone();
        if let (Outcome::Retry(reason), Some(subject)) = (&outcome, &subject)
            && !now
        {
            tracing::debug!(mapping = %self.mapping, %reason, "retry (in subject order)");
            if entry.retry {
                return;
            }
            let was_pending = std::mem::replace(&mut entry.handed, false);
            entry.retry = true;
            if let Some(lane) = self.by_subject.get_mut(subject) {
                if was_pending {
                    lane.pending = lane.pending.saturating_sub(1);
                }
                lane.retries += 1;
            }
            self.rewind(subject);
            return;
        }
        let Some(entry) = self.remove(token) else { return };
        let (kind, payload) = match &outcome {
            Outcome::Delivered => ("ack", Bytes::from_static(b"+ACK")),
            Outcome::Retry(reason) => {
                // Ordered subjects never get here with a delay: only an
                // immediate nak puts a message ahead of newer ones.
                let delay = (!now && entry.handed && subject.is_none()).then(|| nak_delay(entry.delivered));
                tracing::debug!(mapping = %self.mapping, %reason, ?delay, "nak");
                ("nak", nak_payload(delay))
            }
            Outcome::Reject(reason) => {
                // Term: the server drops the message for this consumer and
                // publishes an advisory about it.
                tracing::debug!(mapping = %self.mapping, %reason, "term");
                ("term", Bytes::from_static(b"+TERM"))
            }
        };
        self.send_new(token, entry.reply, kind, payload).await;
        if let Some(subject) = subject
            && !now
        {
            // A settled message may have been the last a retry waited for.
            self.rewind(&subject);
        }
    }

    /// Rewinds `subject` once every record of it handed out has its
    /// outcome: the retried ones go back to the queue, ahead of the newer
    /// records of the subject, to be handed out again in stream order. Until
    /// then nothing of the subject is handed out (see `eligible`).
    ///
    /// This is what a partitioned log does on a retry, done by the source: a
    /// nak would put the message at the back of the server's redelivery
    /// queue, behind newer messages of its subject nak'd while it was out,
    /// and those would come back first. The messages stay in progress
    /// meanwhile, kept alive like any other.
    fn rewind(&mut self, subject: &Arc<str>) {
        let Some(lane) = self.by_subject.get_mut(subject) else { return };
        if lane.retries == 0 || lane.pending > 0 {
            return;
        }
        lane.retries = 0;
        let in_order: Vec<u64> = lane.entries.iter().map(|(_, token)| *token).collect();
        for token in in_order {
            let Some(entry) = self.in_flight.get_mut(&token) else { continue };
            if !entry.retry {
                continue;
            }
            entry.retry = false;
            // Every ordered entry keeps its record; this is never None.
            let Some(again) = entry.again.as_ref() else { continue };
            entry.delivered += 1;
            let mut data = again.data.clone();
            data["deliveryCount"] = entry.delivered.into();
            let record = Record {
                id: again.id.clone(),
                scope: Some(subject.clone()),
                key: None,
                data,
                size: again.size,
                created_at: again.created_at,
                deferred: None,
                ack: Ack::channel(token, self.acks.clone()),
            };
            self.insert_ready(token, record);
        }
    }

    /// Queues a record to hand out: last, or for an ordered subject ahead of
    /// its newer records already queued.
    fn insert_ready(&mut self, token: u64, record: Record) {
        let sequence = self.in_flight.get(&token).map_or(0, |entry| entry.stream_sequence);
        let at = record.scope.as_ref().and_then(|subject| {
            self.ready.iter().position(|(waiting, _)| {
                self.in_flight
                    .get(waiting)
                    .is_some_and(|e| e.subject.as_ref() == Some(subject) && e.stream_sequence > sequence)
            })
        });
        match at {
            Some(at) => self.ready.insert(at, (token, record)),
            None => self.ready.push_back((token, record)),
        }
    }

    /// Whether the queued record of `token` may be handed out now: not while
    /// its subject waits to rewind.
    fn eligible(&self, token: u64) -> bool {
        let subject = self.in_flight.get(&token).and_then(|entry| entry.subject.as_ref());
        subject.is_none_or(|subject| self.by_subject.get(subject).is_none_or(|lane| lane.retries == 0))
    }

    fn next_ready(&self) -> Option<usize> {
        if self.source.config.ordered {
            self.ready.iter().position(|(token, _)| self.eligible(*token))
        } else if self.ready.is_empty() {
            None
        } else {
            Some(0)
        }
    }

    /// Forgets a message received, in both indexes.
    fn remove(&mut self, token: u64) -> Option<InFlight> {
        let entry = self.in_flight.remove(&token)?;
        if let Some(subject) = &entry.subject
            && let Some(lane) = self.by_subject.get_mut(subject)
        {
            lane.entries.remove(&(entry.stream_sequence, token));
            if entry.handed {
                lane.pending = lane.pending.saturating_sub(1);
            }
            if entry.retry {
                lane.retries = lane.retries.saturating_sub(1);
            }
            if lane.entries.is_empty() {
                self.by_subject.remove(subject);
            }
        }
        Some(entry)
    }

    async fn send_new(&mut self, token: u64, reply: Subject, kind: &'static str, payload: Bytes) {
        let due = Instant::now();
        self.settling.insert(token, Settling { reply, payload, kind, attempts: 0, due });
        self.send_settle(token).await;
    }

    /// Sends (again) the settle of `token`: an ack as it is, a nak or term
    /// with a reply subject the server answers once it processed it. Left
    /// for the tick while disconnected.
    async fn send_settle(&mut self, token: u64) {
        if !self.connected {
            return;
        }
        let (Some(conn), Some(settle)) = (self.conn.as_ref(), self.settling.get_mut(&token)) else { return };
        settle.attempts += 1;
        settle.due = Instant::now() + SETTLE_TIMEOUT;
        if settle.kind == "ack" {
            let sent = tokio::time::timeout(
                PUBLISH_TIMEOUT,
                conn.client.publish(settle.reply.clone(), settle.payload.clone()),
            )
            .await;
            if matches!(sent, Ok(Ok(()))) {
                self.settling.remove(&token);
                self.count_settle("ack", "sent");
            } else {
                tracing::debug!(mapping = %self.mapping, token, "could not send an ack now; it is sent again later");
            }
            return;
        }
        let reply = format!("{}.{token}", conn.confirm_prefix);
        let sent = tokio::time::timeout(
            PUBLISH_TIMEOUT,
            conn.client.publish_with_reply(settle.reply.clone(), reply, settle.payload.clone()),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            tracing::debug!(mapping = %self.mapping, token, "could not send a settle now; it is sent again later");
        }
    }

    /// The server confirmed the settle whose token ends the subject.
    fn confirmed(&mut self, message: &Message) {
        let token = message.subject.as_str().rsplit('.').next().and_then(|t| t.parse::<u64>().ok());
        if let Some(settle) = token.and_then(|token| self.settling.remove(&token)) {
            self.count_settle(settle.kind, "confirmed");
        }
    }

    /// In-progress acks for messages not touched for a third of the ack
    /// wait, settles sent again, and the pull watchdog.
    async fn tick(&mut self) {
        let now = Instant::now();
        if let Some(session) = self.session.as_mut()
            && session.outstanding > 0
            && now.duration_since(session.last_activity) > PULL_HEARTBEAT * 2 + Duration::from_secs(1)
        {
            // No heartbeat: the pull request is gone (the server restarted
            // or lost it). Ask again.
            tracing::debug!(mapping = %self.mapping, "pull request went silent; pulling again");
            session.outstanding = 0;
        }
        if !self.connected {
            return;
        }
        let Some(conn) = self.conn.as_ref() else { return };
        let every = self.source.config.ack_wait / 3;
        let mut touched = Vec::new();
        for (token, entry) in self.in_flight.iter_mut() {
            if now.duration_since(entry.touched) >= every {
                entry.touched = now;
                touched.push((*token, entry.reply.clone()));
            }
        }
        for (_, reply) in touched {
            let sent = tokio::time::timeout(PUBLISH_TIMEOUT, conn.client.publish(reply, Bytes::from_static(b"+WPI")));
            if !matches!(sent.await, Ok(Ok(()))) {
                break;
            }
        }
        let due: Vec<u64> =
            self.settling.iter().filter(|(_, settle)| settle.due <= now).map(|(token, _)| *token).collect();
        for token in due {
            let give_up = self.settling.get(&token).is_some_and(|settle| settle.attempts >= SETTLE_ATTEMPTS);
            if give_up {
                if let Some(settle) = self.settling.remove(&token) {
                    tracing::warn!(mapping = %self.mapping, kind = settle.kind, reply = %settle.reply,
                        "the server never confirmed a settle; it redelivers the message after the ack wait");
                    self.count_settle(settle.kind, "abandoned");
                }
                continue;
            }
            self.send_settle(token).await;
        }
    }

    /// Reflects connection events in the state; a closed client is dropped
    /// so the next setup makes a new one.
    async fn event(&mut self, event: Event) {
        match event {
            Event::Connected => {
                self.connected = true;
                if let Some(session) = self.session.as_mut() {
                    // A pull request may not have survived the reconnect.
                    session.outstanding = 0;
                    self.running();
                }
                // Settles queued while disconnected go out now.
                let queued: Vec<u64> = self.settling.keys().copied().collect();
                for token in queued {
                    self.send_settle(token).await;
                }
            }
            Event::Disconnected => {
                self.connected = false;
                let reason = format!("lost the connection to NATS at {}; reconnecting", self.source.servers);
                tracing::warn!(mapping = %self.mapping, %reason, "NATS source disconnected");
                self.disconnected(reason);
            }
            Event::Closed => {
                self.connected = false;
                self.conn = None;
                self.session = None;
            }
            Event::LameDuckMode => {
                tracing::info!(mapping = %self.mapping, servers = %self.source.servers, "the NATS server is shutting down (lame duck mode)");
            }
            other => tracing::warn!(mapping = %self.mapping, event = %other, "NATS client event"),
        }
    }

    /// Hands ready records to the engine, the first into `permit`, more
    /// while its channel has room.
    fn hand(&mut self, permit: mpsc::Permit<'_, Record>) {
        let Some((token, record)) = self.next_ready().and_then(|at| self.ready.remove(at)) else { return };
        self.mark_handed(token);
        permit.send(record);
        while let Some(at) = self.next_ready() {
            let Ok(permit) = self.out.try_reserve() else { break };
            if let Some((token, record)) = self.ready.remove(at) {
                mark_handed(&mut self.in_flight, &mut self.by_subject, token);
                permit.send(record);
            }
        }
    }

    fn mark_handed(&mut self, token: u64) {
        mark_handed(&mut self.in_flight, &mut self.by_subject, token);
    }

    async fn run(&mut self) {
        let mut backoff = Backoff::new(self.source.backoff_initial, self.source.backoff_max);
        let mut setup_at = Some(Instant::now());
        let mut tick = tokio::time::interval(self.source.tick());
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let shutdown = self.shutdown.clone();
        let out = self.out.clone();
        loop {
            if self.session.is_none() && setup_at.is_none() {
                // Lost (consumer deleted, client closed): set up again.
                setup_at = Some(Instant::now());
            }
            self.pull().await;
            let can_hand = self.next_ready().is_some();
            let wake = {
                let confirms = self.conn.as_mut().map(|conn| &mut conn.confirms);
                let inbox = self.session.as_mut().map(|session| &mut session.inbox);
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => Wake::Shutdown,
                    // Early, though ready only once a period: under steady
                    // load a branch below is ready on every turn, and a tick
                    // placed after them would never win, so no in-progress
                    // signal would go out and long invocations would pass
                    // ack_wait and be redelivered while still running.
                    _ = tick.tick() => Wake::Tick,
                    Some((token, outcome)) = self.ack_rx.recv() => Wake::Outcome(token, outcome),
                    message = next(confirms) => Wake::Confirmed(message),
                    Some(event) = self.events.recv() => Wake::Event(event),
                    permit = out.reserve(), if can_hand => Wake::Handed(permit.ok()),
                    message = next(inbox) => Wake::Delivery(message),
                    _ = sleep_until(setup_at.unwrap_or_else(Instant::now)), if setup_at.is_some() => Wake::Setup,
                }
            };
            match wake {
                Wake::Shutdown => break,
                Wake::Outcome(token, outcome) => {
                    self.settle(token, outcome, false).await;
                    // Settle what else is waiting before going round the
                    // loop again: a batch's outcomes come together.
                    for _ in 1..DRAIN_AT_ONCE {
                        let Ok((token, outcome)) = self.ack_rx.try_recv() else { break };
                        self.settle(token, outcome, false).await;
                    }
                }
                Wake::Confirmed(Some(message)) => {
                    self.confirmed(&message);
                    if let Some(conn) = self.conn.as_mut() {
                        let mut more = Vec::new();
                        while more.len() < DRAIN_AT_ONCE {
                            let Some(Some(message)) = conn.confirms.next().now_or_never() else { break };
                            more.push(message);
                        }
                        for message in more {
                            self.confirmed(&message);
                        }
                    }
                }
                Wake::Confirmed(None) => {
                    // The client closed; a new one is made on the next setup.
                    self.conn = None;
                    self.session = None;
                }
                Wake::Event(event) => self.event(event).await,
                Wake::Handed(Some(permit)) => self.hand(permit),
                // The engine is gone: same as a shutdown.
                Wake::Handed(None) => break,
                Wake::Delivery(Some(message)) => {
                    let Some(mut session) = self.session.take() else { continue };
                    let mut result = self.delivery(&mut session, message);
                    // Take what else already arrived in one go.
                    for _ in 1..DRAIN_AT_ONCE {
                        if result.is_err() {
                            break;
                        }
                        let Some(Some(message)) = session.inbox.next().now_or_never() else { break };
                        result = self.delivery(&mut session, message);
                    }
                    match result {
                        Ok(()) => self.session = Some(session),
                        Err(reason) => {
                            let wait = backoff.next_wait();
                            tracing::error!(mapping = %self.mapping, %reason, retry_in = ?wait, "NATS source lost its consumer");
                            self.disconnected(reason);
                            setup_at = Some(Instant::now() + wait);
                        }
                    }
                }
                Wake::Delivery(None) => self.session = None,
                Wake::Tick => self.tick().await,
                Wake::Setup => {
                    let opened = tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => break,
                        opened = tokio::time::timeout(OPEN_TIMEOUT, self.open()) => opened,
                    };
                    let failure = match opened {
                        Ok(Ok(session)) => {
                            self.count_setup("ok");
                            backoff.reset();
                            self.session = Some(session);
                            setup_at = None;
                            self.running();
                            continue;
                        }
                        Ok(Err(reason)) => reason,
                        Err(_) => format!("no answer from NATS at {} within {OPEN_TIMEOUT:?}", self.source.servers),
                    };
                    self.count_setup("error");
                    let wait = backoff.next_wait();
                    tracing::error!(mapping = %self.mapping, stream = self.source.stream(), consumer = self.source.consumer(),
                        reason = %failure, retry_in = ?wait, "NATS source cannot consume; retrying");
                    self.disconnected(failure);
                    setup_at = Some(Instant::now() + wait);
                }
            }
        }
        self.close().await;
        self.gauge(false);
        set_state(&self.state, SourceState::Stopped);
        tracing::info!(mapping = %self.mapping, stream = self.source.stream(), consumer = self.source.consumer(), "NATS source stopped");
    }

    /// Stops pulling, releases what the engine never got, waits (bounded)
    /// for the outcomes of what it did get, and releases the rest.
    async fn close(&mut self) {
        if let Some(mut session) = self.session.take()
            && self.connected
        {
            // Unsubscribing ends the server's waiting pull request; draining
            // still delivers what it sent before, which is released below.
            if matches!(tokio::time::timeout(PUBLISH_TIMEOUT, session.inbox.drain()).await, Ok(Ok(()))) {
                let deadline = Instant::now() + CLOSE_TIMEOUT;
                loop {
                    let message = tokio::select! {
                        message = session.inbox.next() => message,
                        _ = sleep_until(deadline) => None,
                    };
                    let Some(message) = message else { break };
                    // Tracked as never handed out, so its retry below is
                    // immediate.
                    if self.delivery(&mut session, message).is_err() {
                        break;
                    }
                }
            }
            // nats-server (2.9 at least) drops a dead pull request lazily, and
            // until then hands the next redelivery to it, where it is lost
            // until its ack wait ends. A consumer info request makes the
            // server drop it now, before any nak below.
            if let Some(conn) = self.conn.as_ref() {
                let info = format!("$JS.API.CONSUMER.INFO.{}.{}", self.source.stream(), self.source.consumer());
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.client.request(info, Bytes::new())).await;
            }
        }
        let ordered = self.source.config.ordered;
        if !ordered {
            // Records the engine never took: dropping them reports Retry,
            // which releases each at once (never handed out).
            self.ready.clear();
        }
        // Ordered, they wait: released now, they would come back ahead of
        // older messages of their subject whose acks the engine still holds.

        let deadline = Instant::now() + self.source.drain_timeout;
        let mut tick = tokio::time::interval(self.source.tick());
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Settles wait for the server's word, unless there is no connection
        // to send them on: then only the outcomes are waited for.
        while self.in_flight.values().any(|entry| entry.handed) || (self.connected && !self.settling.is_empty()) {
            let wake = {
                let confirms = self.conn.as_mut().map(|conn| &mut conn.confirms);
                tokio::select! {
                    biased;
                    Some((token, outcome)) = self.ack_rx.recv() => Wake::Outcome(token, outcome),
                    message = next(confirms) => Wake::Confirmed(message),
                    Some(event) = self.events.recv() => Wake::Event(event),
                    _ = tick.tick() => Wake::Tick,
                    _ = sleep_until(deadline) => break,
                }
            };
            match wake {
                Wake::Outcome(token, outcome) => self.settle(token, outcome, false).await,
                Wake::Confirmed(Some(message)) => self.confirmed(&message),
                Wake::Event(event) => self.event(event).await,
                Wake::Tick => self.tick().await,
                _ => break,
            }
        }
        if !self.in_flight.is_empty() {
            let handed = self.in_flight.values().filter(|entry| entry.handed).count();
            if handed > 0 {
                tracing::warn!(mapping = %self.mapping, in_flight = handed,
                    "shutdown: gave up waiting for acks; releasing those messages for redelivery");
            }
            // In stream order, so each subject's messages come back in order.
            let mut left: Vec<(u64, u64)> =
                self.in_flight.iter().map(|(token, entry)| (entry.stream_sequence, *token)).collect();
            left.sort_unstable();
            for (_, token) in left {
                self.settle(token, Outcome::Retry("shutdown".into()), true).await;
            }
            let deadline = Instant::now() + CLOSE_TIMEOUT;
            while self.connected && !self.settling.is_empty() {
                let confirms = self.conn.as_mut().map(|conn| &mut conn.confirms);
                let message = tokio::select! {
                    message = next(confirms) => message,
                    _ = sleep_until(deadline) => None,
                };
                match message {
                    Some(message) => self.confirmed(&message),
                    None => break,
                }
            }
        }
        // Any left were released above; their acks now report to tokens no
        // longer tracked.
        self.ready.clear();
        if !self.settling.is_empty() {
            tracing::warn!(mapping = %self.mapping, unconfirmed = self.settling.len(),
                "shutdown: settles the server did not confirm; it redelivers those messages after the ack wait");
        }
        if let Some(conn) = self.conn.take()
            && self.connected
        {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.client.flush()).await;
        }
    }
}

fn mark_handed(in_flight: &mut HashMap<u64, InFlight>, by_subject: &mut HashMap<Arc<str>, Lane>, token: u64) {
    let Some(entry) = in_flight.get_mut(&token) else { return };
    entry.handed = true;
    if let Some(lane) = entry.subject.as_ref().and_then(|subject| by_subject.get_mut(subject)) {
        lane.pending += 1;
    }
}

/// The next message of an optional subscription; never, without one.
async fn next(subscriber: Option<&mut Subscriber>) -> Option<Message> {
    match subscriber {
        Some(subscriber) => subscriber.next().await,
        None => std::future::pending().await,
    }
}

/// Filter subjects as one list, whichever field holds them.
fn filters(single: &str, many: &[String]) -> Vec<String> {
    if !many.is_empty() {
        many.to_vec()
    } else if single.is_empty() {
        Vec::new()
    } else {
        vec![single.to_string()]
    }
}

#[async_trait]
impl Source for NatsSource {
    fn envelope(&self) -> Arc<dyn Envelope> {
        Arc::new(NatsEnvelope::new(self.stream(), self.consumer()))
    }

    /// Only ordered records are scoped (by subject).
    fn scoped(&self) -> bool {
        self.config.ordered
    }

    /// Never fails on broker trouble: an unreachable server, a missing
    /// stream or a refused consumer show as `Disconnected` and are retried
    /// until shutdown.
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), ConnectorError> {
        let SourceContext { mapping, out, shutdown, state } = cx;
        let (acks, ack_rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let mut task = Task {
            source: &self,
            mapping,
            out,
            shutdown,
            state,
            acks,
            ack_rx,
            events_tx,
            events,
            conn: None,
            session: None,
            connected: false,
            in_flight: HashMap::new(),
            by_subject: HashMap::new(),
            settling: HashMap::new(),
            ready: VecDeque::new(),
            next_token: 0,
        };
        task.run().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nak_delays_double_up_to_a_minute() {
        let delays: Vec<u64> = (1..=9).map(|delivered| nak_delay(delivered).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(nak_delay(0), Duration::from_secs(1), "a count the server never sends");
        assert_eq!(nak_delay(u64::MAX), NAK_DELAY_MAX);
        assert_eq!(nak_payload(None), Bytes::from_static(b"-NAK"));
        assert_eq!(nak_payload(Some(Duration::from_secs(2))), Bytes::from_static(b"-NAK {\"delay\":2000000000}"));
    }

    #[test]
    fn server_versions() {
        assert_eq!(version("2.9.10"), Some((2, 9)));
        assert_eq!(version("2.11.0-beta.1"), Some((2, 11)));
        assert!(version("2.9.10").is_some_and(|v| v < (2, 10)));
        assert_eq!(version("dev"), None);
    }

    #[test]
    fn filters_read_from_either_field() {
        assert_eq!(filters("", &[]), Vec::<String>::new());
        assert_eq!(filters("a.>", &[]), ["a.>"]);
        assert_eq!(filters("", &["a".into(), "b".into()]), ["a", "b"]);
    }

    #[test]
    fn the_tick_keeps_messages_alive_well_within_the_ack_wait() {
        let config = |ack_wait: Duration| NatsSourceConfig {
            url: "nats://h".into(),
            stream: "S".into(),
            consumer: "c".into(),
            subjects: Vec::new(),
            create_stream: false,
            ordered: false,
            ack_wait,
            max_ack_pending: 10,
        };
        let tick = |seconds: u64| NatsSource::new(&config(Duration::from_secs(seconds))).map(|s| s.tick());
        assert_eq!(tick(1).ok(), Some(Duration::from_secs(1) / 6));
        assert_eq!(tick(30).ok(), Some(Duration::from_secs(1)));
        // A message is touched at the latest a third of the ack wait plus a
        // tick after the last touch: under half of it.
        for seconds in [1, 2, 30, 600] {
            let ack_wait = Duration::from_secs(seconds);
            let tick = tick(seconds).unwrap_or_default();
            assert!(ack_wait / 3 + tick <= ack_wait / 2, "{seconds} s");
        }
    }
}
