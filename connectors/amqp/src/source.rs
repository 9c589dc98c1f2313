//! The queue source: consumes one existing queue with manual acknowledgements
//! and settles each message from the outcome of its record's `Ack`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
    QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, Consumer};
use switchyard_sdk::{
    Ack, Backoff, ConnectorError, Envelope, Outcome, Record, Source, SourceContext, SourceState, set_state,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{Endpoint, RabbitMqSourceConfig};
use crate::envelope::{RabbitMqEnvelope, broker_arn, created_at, message_data};
use crate::error::{Step, describe};

/// How long connecting, opening the channel, checking the queue and starting
/// the consumer may take together before the attempt counts as failed.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one ack, nack or reject may take to be written; longer means the
/// connection is stuck.
/// Outcomes settled together at most.
const MAX_SETTLE_GROUP: usize = 1024;
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long cancelling the consumer and closing the channel and connection
/// may take each at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Identifies one delivery: its delivery tag on the channel of connection
/// `epoch`. Tags are only valid on the channel that delivered them, so the
/// late ack of a record from an earlier connection is recognised and ignored
/// (the broker has requeued and redelivered that message since).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tag {
    epoch: u64,
    delivery_tag: u64,
}

/// A RabbitMQ queue source. Build it with [`RabbitMqSource::new`]; it connects
/// when it runs, and reconnects with backoff for as long as it runs.
pub struct RabbitMqSource {
    endpoint: Endpoint,
    queue: ShortString,
    prefetch: u16,
    drain_timeout: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
}

impl RabbitMqSource {
    /// Checks the configuration; does not connect.
    pub fn new(config: &RabbitMqSourceConfig) -> Result<Self, ConnectorError> {
        let (endpoint, queue) = config.validate()?;
        Ok(Self {
            endpoint,
            queue,
            prefetch: config.prefetch,
            drain_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
        })
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

    fn queue(&self) -> &str {
        self.queue.as_str()
    }
}

/// One connection with its channel and consumer.
struct Session {
    epoch: u64,
    connection: Connection,
    channel: Channel,
    consumer: Consumer,
    /// Delivery tags handed out on this channel and not settled yet.
    in_flight: HashSet<u64>,
    /// Acks, nacks and rejects already queued on the channel, in order,
    /// waiting for lapin to write them. Consuming goes on meanwhile: waiting
    /// for each write before reading the next delivery would hold every batch
    /// up by a round trip through lapin's I/O thread.
    settling: FuturesUnordered<BoxFuture<'static, Result<(), String>>>,
}

impl Session {
    /// Queues one settle frame on the channel now, so frames keep the order
    /// of the calls, and leaves waiting for its write to `settling`.
    fn issue(&mut self, mut settle: BoxFuture<'static, Result<(), String>>) -> Result<(), String> {
        // The first poll queues the frame (lapin's methods are async fns).
        match (&mut settle).now_or_never() {
            Some(result) => result,
            None => {
                self.settling.push(settle);
                Ok(())
            }
        }
    }

    /// Waits until every queued settle frame was written.
    async fn flush(&mut self) -> Result<(), String> {
        while let Some(result) = self.settling.next().await {
            result?;
        }
        Ok(())
    }
}

/// A settle method's future, bounded by [`SETTLE_TIMEOUT`], with errors
/// described for the mapping's state.
fn settled(
    call: impl Future<Output = lapin::Result<()>> + Send + 'static,
    endpoint: Endpoint,
    step: &'static str,
) -> BoxFuture<'static, Result<(), String>> {
    async move {
        match tokio::time::timeout(SETTLE_TIMEOUT, call).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(describe(&e, Step::Other(step), &endpoint)),
            Err(_) => Err(format!("{step} on {endpoint} took longer than {SETTLE_TIMEOUT:?}")),
        }
    }
    .boxed()
}

/// Why consuming stopped.
enum Ended {
    /// Shutdown was asked for, or the engine is gone.
    Shutdown,
    /// The connection, channel or consumer broke: reconnect.
    Lost(String),
}

/// Consumer tags need only be unique per channel; the mapping name makes the
/// consumer recognisable in the management UI.
fn consumer_tag(mapping: &str, epoch: u64) -> ShortString {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut mapping = mapping.to_string();
    // Leave room for the numbers within a short string's 255 bytes.
    while mapping.len() > 200 {
        mapping.pop();
    }
    let tag = format!("switchyard-{mapping}-{}-{epoch}-{n}", std::process::id());
    ShortString::try_new(tag).unwrap_or_else(|_| ShortString::from("switchyard"))
}

/// The record of one delivery; its ack reports `(tag, outcome)` on `acks`.
fn record(epoch: u64, delivery: Delivery, acks: &mpsc::UnboundedSender<(Tag, Outcome)>) -> Record {
    let properties = &delivery.properties;
    let id = match properties.message_id() {
        Some(id) if !id.as_str().is_empty() => id.as_str().to_string(),
        _ => delivery.delivery_tag.to_string(),
    };
    Record {
        id,
        scope: None,
        key: None,
        data: message_data(properties, delivery.redelivered, &delivery.data),
        size: delivery.data.len(),
        created_at: created_at(properties),
        deferred: None,
        ack: Ack::channel(Tag { epoch, delivery_tag: delivery.delivery_tag }, acks.clone()),
    }
}

/// Everything the running source task owns besides the broker session.
struct Task<'a> {
    source: &'a RabbitMqSource,
    mapping: Arc<str>,
    out: mpsc::Sender<Record>,
    shutdown: CancellationToken,
    state: watch::Sender<SourceState>,
    acks: mpsc::UnboundedSender<(Tag, Outcome)>,
    ack_rx: mpsc::UnboundedReceiver<(Tag, Outcome)>,
}

impl Task<'_> {
    fn connected(&self, connected: bool) {
        let value = if connected { 1.0 } else { 0.0 };
        metrics::gauge!("switchyard_source_connected", "mapping" => self.mapping.to_string()).set(value);
    }

    fn count_attempt(&self, outcome: &'static str) {
        metrics::counter!("switchyard_amqp_connections_total", "mapping" => self.mapping.to_string(), "outcome" => outcome)
            .increment(1);
    }

    fn disconnected(&self, reason: String, retry_in: Duration) {
        tracing::error!(mapping = %self.mapping, queue = self.source.queue(), %reason, ?retry_in, "RabbitMQ source disconnected; retrying");
        self.connected(false);
        set_state(&self.state, SourceState::Disconnected(reason));
    }

    /// Connects, checks the queue and starts consuming.
    async fn open(&self, epoch: u64) -> Result<Session, String> {
        let source = self.source;
        let endpoint = &source.endpoint;
        let name = ShortString::try_new(format!("switchyard {}", self.mapping))
            .unwrap_or_else(|_| ShortString::from("switchyard"));
        let properties = ConnectionProperties::default().with_connection_name(name.as_str().into());
        let connection = Connection::connect_uri(endpoint.uri.clone(), properties)
            .await
            .map_err(|e| describe(&e, Step::Connect, endpoint))?;
        // From here on, a failure drops the connection, which closes it.
        let channel =
            connection.create_channel().await.map_err(|e| describe(&e, Step::Other("open a channel"), endpoint))?;
        channel
            .basic_qos(source.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| describe(&e, Step::Other("basic.qos"), endpoint))?;
        // Passive: only checks that the queue exists. Declaring it would need
        // its exact arguments (type, dead-lettering), which belong to whoever
        // owns the queue.
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        channel
            .queue_declare(source.queue.clone(), passive, FieldTable::default())
            .await
            .map_err(|e| describe(&e, Step::Queue(source.queue()), endpoint))?;
        let consumer = channel
            .basic_consume(
                source.queue.clone(),
                consumer_tag(&self.mapping, epoch),
                BasicConsumeOptions::default(), // manual acks
                FieldTable::default(),
            )
            .await
            .map_err(|e| describe(&e, Step::Queue(source.queue()), endpoint))?;
        Ok(Session {
            epoch,
            connection,
            channel,
            consumer,
            in_flight: HashSet::new(),
            settling: FuturesUnordered::new(),
        })
    }

    /// Settles a group of outcomes: the delivered ones with a single
    /// `multiple` ack when every older delivery of the session is settled too,
    /// else with concurrent single acks; retries and rejects one by one.
    async fn settle_all(&self, session: &mut Session, outcomes: Vec<(Tag, Outcome)>) -> Result<(), String> {
        let mut delivered = Vec::new();
        let mut others = Vec::new();
        for (tag, outcome) in outcomes {
            match outcome {
                Outcome::Delivered if tag.epoch == session.epoch && session.in_flight.remove(&tag.delivery_tag) => {
                    delivered.push(tag.delivery_tag)
                }
                // Stale ones are logged and ignored by `settle`.
                outcome => others.push((tag, outcome)),
            }
        }
        if let Some(&highest) = delivered.iter().max() {
            let covered = !session.in_flight.iter().any(|&open| open < highest);
            let acks: Vec<(u64, bool)> =
                if covered { vec![(highest, true)] } else { delivered.iter().map(|&tag| (tag, false)).collect() };
            for (tag, multiple) in acks {
                let channel = session.channel.clone();
                let ack = async move { channel.basic_ack(tag, BasicAckOptions { multiple }).await };
                session.issue(settled(ack, self.source.endpoint.clone(), "acknowledge deliveries"))?;
            }
        }
        for (tag, outcome) in others {
            self.settle(session, tag, outcome).await?;
        }
        Ok(())
    }

    /// Acks, requeues or rejects one delivery. Err when the channel broke.
    async fn settle(&self, session: &mut Session, tag: Tag, outcome: Outcome) -> Result<(), String> {
        if tag.epoch != session.epoch || !session.in_flight.remove(&tag.delivery_tag) {
            // From a channel that is gone; the broker requeued the message.
            tracing::debug!(mapping = %self.mapping, ?tag, "ignoring the ack of a delivery from an earlier connection");
            return Ok(());
        }
        let delivery_tag = tag.delivery_tag;
        let channel = session.channel.clone();
        let call: BoxFuture<'static, lapin::Result<()>> = match &outcome {
            Outcome::Delivered => {
                async move { channel.basic_ack(delivery_tag, BasicAckOptions::default()).await }.boxed()
            }
            Outcome::Retry(reason) => {
                tracing::debug!(mapping = %self.mapping, delivery_tag, %reason, "requeueing");
                let requeue = BasicNackOptions { multiple: false, requeue: true };
                async move { channel.basic_nack(delivery_tag, requeue).await }.boxed()
            }
            Outcome::Reject(reason) => {
                // Without requeue the broker hands the message to the queue's
                // dead-letter exchange, or drops it when there is none.
                tracing::debug!(mapping = %self.mapping, delivery_tag, %reason, "rejecting");
                let reject = BasicRejectOptions { requeue: false };
                async move { channel.basic_reject(delivery_tag, reject).await }.boxed()
            }
        };
        session.issue(settled(call, self.source.endpoint.clone(), "settle a delivery"))
    }

    /// Hands deliveries out and settles their outcomes until shutdown or
    /// until the session breaks.
    async fn consume(&mut self, session: &mut Session) -> Ended {
        let out = self.out.clone();
        // A slot on the engine's channel, reserved before taking a delivery:
        // a full channel is backpressure, and the prefetch limit keeps the
        // broker from sending more than that meanwhile.
        let mut permit = None;
        loop {
            tokio::select! {
                biased;
                Some(first) = self.ack_rx.recv() => {
                    // Settle every outcome waiting now together: a batch's
                    // acks become one multiple-ack when nothing older is open.
                    let mut outcomes = vec![first];
                    while outcomes.len() < MAX_SETTLE_GROUP {
                        match self.ack_rx.try_recv() {
                            Ok(next) => outcomes.push(next),
                            Err(_) => break,
                        }
                    }
                    if let Err(reason) = self.settle_all(session, outcomes).await {
                        return Ended::Lost(reason);
                    }
                }
                Some(written) = session.settling.next(), if !session.settling.is_empty() => {
                    if let Err(reason) = written {
                        return Ended::Lost(reason);
                    }
                }
                _ = self.shutdown.cancelled() => return Ended::Shutdown,
                reserved = out.reserve(), if permit.is_none() => match reserved {
                    Ok(slot) => permit = Some(slot),
                    // The engine is gone: same as a shutdown.
                    Err(_) => return Ended::Shutdown,
                },
                next = session.consumer.next(), if permit.is_some() => match next {
                    Some(Ok(delivery)) => {
                        session.in_flight.insert(delivery.delivery_tag);
                        let record = record(session.epoch, delivery, &self.acks);
                        if let Some(slot) = permit.take() {
                            slot.send(record);
                        }
                    }
                    Some(Err(e)) => {
                        return Ended::Lost(describe(&e, Step::Consume(self.source.queue()), &self.source.endpoint));
                    }
                    None => {
                        return Ended::Lost(format!(
                            "the broker cancelled the consumer of queue {:?} on {} (queue deleted?)",
                            self.source.queue(),
                            self.source.endpoint
                        ));
                    }
                },
            }
        }
    }

    /// Stops the consumer, waits for the outcomes of what was handed out, and
    /// closes: whatever is still unacked then returns to the queue.
    async fn close(&mut self, mut session: Session) {
        let tag = session.consumer.tag();
        let cancelled =
            tokio::time::timeout(CLOSE_TIMEOUT, session.channel.basic_cancel(tag, BasicCancelOptions::default())).await;
        let usable = matches!(cancelled, Ok(Ok(())));
        if !usable {
            tracing::warn!(mapping = %self.mapping, "could not cancel the RabbitMQ consumer; closing the connection");
        }

        let drain = tokio::time::sleep(self.source.drain_timeout);
        tokio::pin!(drain);
        while usable && !session.in_flight.is_empty() {
            tokio::select! {
                biased;
                Some((tag, outcome)) = self.ack_rx.recv() => {
                    if let Err(reason) = self.settle(&mut session, tag, outcome).await {
                        tracing::warn!(mapping = %self.mapping, %reason, "shutdown: the connection broke while settling; the broker requeues the rest");
                        break;
                    }
                }
                _ = &mut drain => {
                    tracing::warn!(
                        mapping = %self.mapping, in_flight = session.in_flight.len(),
                        "shutdown: gave up waiting for acks; the broker requeues those messages"
                    );
                    break;
                }
            }
        }

        if usable
            && let Err(reason) =
                tokio::time::timeout(CLOSE_TIMEOUT, session.flush()).await.unwrap_or_else(|_| Err("timed out".into()))
        {
            tracing::warn!(mapping = %self.mapping, %reason, "shutdown: settling failed; the broker requeues the rest");
        }
        // Closing the channel returns its unacked messages to the queue.
        let closed = tokio::time::timeout(CLOSE_TIMEOUT, session.channel.close(200, "shutdown".into())).await;
        if !matches!(closed, Ok(Ok(()))) {
            tracing::debug!(mapping = %self.mapping, "closing the channel failed; closing the connection");
        }
        let closed = tokio::time::timeout(CLOSE_TIMEOUT, session.connection.close(200, "shutdown".into())).await;
        if !matches!(closed, Ok(Ok(()))) {
            tracing::debug!(mapping = %self.mapping, "closing the connection failed; dropping it");
        }
    }

    /// Waits before reconnecting; false when shutdown came first. Acks that
    /// arrive meanwhile belong to a closed channel and are dropped.
    async fn wait(&mut self, wait: Duration) -> bool {
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return false,
                Some(_) = self.ack_rx.recv() => {}
                _ = &mut sleep => return true,
            }
        }
    }

    async fn run(&mut self) {
        let mut backoff = Backoff::new(self.source.backoff_initial, self.source.backoff_max);
        let mut epoch = 0;
        loop {
            epoch += 1;
            let opened = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                opened = tokio::time::timeout(OPEN_TIMEOUT, self.open(epoch)) => opened,
            };
            let failure = match opened {
                Ok(Ok(mut session)) => {
                    self.count_attempt("ok");
                    backoff.reset();
                    tracing::info!(mapping = %self.mapping, queue = self.source.queue(), endpoint = %self.source.endpoint, "RabbitMQ source consuming");
                    self.connected(true);
                    set_state(&self.state, SourceState::Running);
                    match self.consume(&mut session).await {
                        Ended::Shutdown => {
                            self.close(session).await;
                            break;
                        }
                        // The old channel's delivery tags are void now: its
                        // unacked messages go back to the queue, and the acks
                        // of their records are ignored (another epoch).
                        Ended::Lost(reason) => reason,
                    }
                }
                Ok(Err(reason)) => {
                    self.count_attempt("error");
                    reason
                }
                Err(_) => {
                    self.count_attempt("error");
                    format!("no answer from RabbitMQ at {} within {OPEN_TIMEOUT:?}", self.source.endpoint)
                }
            };
            let retry_in = backoff.next_wait();
            self.disconnected(failure, retry_in);
            if !self.wait(retry_in).await {
                break;
            }
        }
        self.connected(false);
        set_state(&self.state, SourceState::Stopped);
        tracing::info!(mapping = %self.mapping, queue = self.source.queue(), "RabbitMQ source stopped");
    }
}

#[async_trait]
impl Source for RabbitMqSource {
    fn envelope(&self) -> Arc<dyn Envelope> {
        Arc::new(RabbitMqEnvelope::new(self.queue(), self.endpoint.vhost(), broker_arn(self.endpoint.host())))
    }

    /// RabbitMQ records carry no scope.
    fn scoped(&self) -> bool {
        false
    }

    /// Never fails on broker trouble: a missing queue, refused credentials or
    /// a lost connection show as `Disconnected` and are retried until
    /// shutdown.
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), ConnectorError> {
        let SourceContext { mapping, out, shutdown, state } = cx;
        let (acks, ack_rx) = mpsc::unbounded_channel();
        let mut task = Task { source: &self, mapping, out, shutdown, state, acks, ack_rx };
        task.run().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_tags_fit_a_short_string() {
        let tag = consumer_tag(&"m".repeat(300), 7);
        assert!(tag.as_str().len() <= 255 && tag.as_str().starts_with("switchyard-mmm"), "{tag}");
    }

    #[test]
    fn records_carry_the_message_id_or_the_delivery_tag() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut delivery = Delivery::mock(42, "".into(), "q".into(), false, b"body".to_vec());
        let plain = record(3, delivery, &tx);
        assert_eq!((plain.id.as_str(), plain.size, plain.scope.is_none()), ("42", 4, true));
        drop(plain);
        let (tag, outcome) = rx.try_recv().unwrap();
        assert_eq!(tag, Tag { epoch: 3, delivery_tag: 42 });
        assert!(matches!(outcome, Outcome::Retry(_)), "a dropped ack is a retry");

        delivery = Delivery::mock(43, "".into(), "q".into(), true, b"x".to_vec());
        delivery.properties = lapin::BasicProperties::default().with_message_id("order-7".into()).with_timestamp(60);
        let identified = record(3, delivery, &tx);
        assert_eq!(identified.id, "order-7");
        assert_eq!(identified.created_at, std::time::UNIX_EPOCH + Duration::from_secs(60));
        assert_eq!(identified.data["redelivered"], true);
        identified.ack.complete(Outcome::Delivered);
    }
}
