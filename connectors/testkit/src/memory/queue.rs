//! A queue with per-message acknowledgements, like SQS or RabbitMQ.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde_json::json;
use switchyard_sdk::{
    Ack, ConnectorError, Envelope, Outcome, Record, RecordsEnvelope, Source, SourceContext, SourceState,
};
use tokio::sync::{Notify, futures::Notified, mpsc};

use crate::Fixture;

/// A shared in-memory queue. Clones share the same messages.
///
/// A message handed to a consumer is invisible to everyone until that consumer
/// settles it: `Delivered` deletes it, `Reject` moves it to the dead letters,
/// `Retry` makes it visible again. When a [`QueueConsumer`] is dropped (the
/// connection closes) whatever it has not settled becomes visible again, as
/// RabbitMQ requeues the unacked messages of a closed channel.
#[derive(Clone, Default)]
pub struct MemoryQueue {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Woken whenever a message becomes visible.
    visible: Notify,
}

#[derive(Default)]
struct State {
    next_id: u64,
    next_tag: u64,
    next_consumer: u64,
    messages: BTreeMap<u64, Message>,
    /// Visible messages, oldest first.
    ready: VecDeque<u64>,
    /// delivery tag -> (consumer, message id), for messages handed out.
    unacked: HashMap<u64, (u64, u64)>,
    dead_letters: Vec<String>,
}

struct Message {
    body: String,
    sent_at: SystemTime,
    receive_count: u32,
}

/// One message handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Settles this delivery (and no later one of the same message).
    pub tag: u64,
    pub message_id: u64,
    pub body: String,
    /// 1 on the first delivery.
    pub receive_count: u32,
    pub sent_at: SystemTime,
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a message, visible at once.
    pub fn send(&self, body: impl Into<String>) {
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.messages.insert(id, Message { body: body.into(), sent_at: SystemTime::now(), receive_count: 0 });
        state.ready.push_back(id);
        drop(state);
        self.shared.visible.notify_waiters();
    }

    /// Opens a consumer (a connection and channel).
    pub fn connect(&self) -> QueueConsumer {
        let mut state = self.lock();
        let id = state.next_consumer;
        state.next_consumer += 1;
        QueueConsumer { queue: self.clone(), id }
    }

    /// Messages not yet deleted or dead-lettered, visible or not.
    pub fn len(&self) -> usize {
        self.lock().messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages handed out and not settled yet.
    pub fn in_flight(&self) -> usize {
        self.lock().unacked.len()
    }

    /// Bodies of rejected messages, in the order they were rejected.
    pub fn dead_letters(&self) -> Vec<String> {
        self.lock().dead_letters.clone()
    }

    /// Resolves once a message becomes visible after this call. Enable it
    /// (`Notified::enable`) before looking at the queue to miss no wake-up.
    pub fn visible(&self) -> Notified<'_> {
        self.shared.visible.notified()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every change is
        // made under one lock acquisition.
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection to a [`MemoryQueue`]; dropping it requeues its unsettled
/// messages.
pub struct QueueConsumer {
    queue: MemoryQueue,
    id: u64,
}

impl QueueConsumer {
    /// Hands out up to `max` visible messages, oldest first.
    pub fn receive(&self, max: usize) -> Vec<Delivery> {
        let mut state = self.queue.lock();
        let mut out = Vec::new();
        while out.len() < max {
            let Some(id) = state.ready.pop_front() else {
                break;
            };
            let tag = state.next_tag;
            state.next_tag += 1;
            let Some(message) = state.messages.get_mut(&id) else {
                continue;
            };
            message.receive_count += 1;
            out.push(Delivery {
                tag,
                message_id: id,
                body: message.body.clone(),
                receive_count: message.receive_count,
                sent_at: message.sent_at,
            });
            state.unacked.insert(tag, (self.id, id));
        }
        out
    }

    /// Settles one delivery. False when the tag is unknown: already settled,
    /// or handed out by another consumer.
    pub fn settle(&self, tag: u64, outcome: &Outcome) -> bool {
        let mut state = self.queue.lock();
        let id = match state.unacked.get(&tag) {
            Some(&(consumer, id)) if consumer == self.id => id,
            _ => return false,
        };
        state.unacked.remove(&tag);
        match outcome {
            Outcome::Delivered => {
                state.messages.remove(&id);
            }
            Outcome::Reject(_) => {
                if let Some(message) = state.messages.remove(&id) {
                    state.dead_letters.push(message.body);
                }
            }
            Outcome::Retry(_) => {
                state.ready.push_back(id);
                drop(state);
                self.queue.shared.visible.notify_waiters();
            }
        }
        true
    }
}

impl Drop for QueueConsumer {
    fn drop(&mut self) {
        let mut state = self.queue.lock();
        let mut released: Vec<(u64, u64)> = state
            .unacked
            .iter()
            .filter(|(_, (consumer, _))| *consumer == self.id)
            .map(|(&tag, &(_, id))| (tag, id))
            .collect();
        if released.is_empty() {
            return;
        }
        // Back at the head, oldest first, as RabbitMQ requeues them.
        released.sort_unstable_by_key(|&(_, id)| id);
        for &(tag, _) in &released {
            state.unacked.remove(&tag);
        }
        for &(_, id) in released.iter().rev() {
            state.ready.push_front(id);
        }
        drop(state);
        self.queue.shared.visible.notify_waiters();
    }
}

/// A reference per-message source on a [`MemoryQueue`].
///
/// It keeps at most `prefetch` messages unsettled, settles each from the
/// outcome of its `Ack`, and on shutdown waits (up to `drain_timeout`) for the
/// outcomes of what it handed out, then disconnects so the queue requeues
/// anything still unsettled.
pub struct MemoryQueueSource {
    queue: MemoryQueue,
    prefetch: usize,
    drain_timeout: Duration,
}

impl MemoryQueueSource {
    pub fn new(queue: MemoryQueue) -> Self {
        Self { queue, prefetch: 32, drain_timeout: Duration::from_secs(5) }
    }

    /// The most messages it keeps unsettled at once (at least 1).
    pub fn with_prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }
}

/// A queued message as a function receives it (an SQS-like record).
fn record(delivery: Delivery, ack: Ack) -> Record {
    Record {
        id: delivery.message_id.to_string(),
        scope: None,
        key: None,
        size: delivery.body.len(),
        data: json!({
            "messageId": delivery.message_id.to_string(),
            "body": delivery.body,
            "attributes": { "ApproximateReceiveCount": delivery.receive_count.to_string() },
        }),
        created_at: delivery.sent_at,
        deferred: None,
        ack,
    }
}

#[async_trait]
impl Source for MemoryQueueSource {
    fn envelope(&self) -> Arc<dyn Envelope> {
        Arc::new(RecordsEnvelope)
    }

    /// Queue records carry no scope, as SQS standard queues', so the
    /// pipeline's tests cover the path without routing too.
    fn scoped(&self) -> bool {
        false
    }

    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), ConnectorError> {
        let consumer = self.queue.connect();
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<(u64, Outcome)>();
        // Handed out (sent, or about to be) and not settled yet.
        let mut unsettled = 0usize;
        cx.state.send_replace(SourceState::Running);

        'read: loop {
            while let Ok((tag, outcome)) = ack_rx.try_recv() {
                consumer.settle(tag, &outcome);
                unsettled = unsettled.saturating_sub(1);
            }
            let visible = self.queue.visible();
            tokio::pin!(visible);
            visible.as_mut().enable();

            let batch = consumer.receive(self.prefetch.saturating_sub(unsettled));
            if !batch.is_empty() {
                unsettled += batch.len();
                let records: Vec<Record> = batch
                    .into_iter()
                    .map(|delivery| {
                        let ack = Ack::channel(delivery.tag, ack_tx.clone());
                        record(delivery, ack)
                    })
                    .collect();
                for record in records {
                    // Records not sent are dropped, and their acks report
                    // Retry like any other: the drain below settles them.
                    tokio::select! {
                        biased;
                        _ = cx.shutdown.cancelled() => break 'read,
                        sent = cx.out.send(record) => if sent.is_err() { break 'read },
                    }
                }
                continue;
            }
            tokio::select! {
                biased;
                _ = cx.shutdown.cancelled() => break,
                Some((tag, outcome)) = ack_rx.recv() => {
                    consumer.settle(tag, &outcome);
                    unsettled = unsettled.saturating_sub(1);
                }
                _ = visible => {}
            }
        }

        // Let the outcomes of in-flight records arrive. Whatever is still
        // unsettled after that is requeued when the consumer is dropped.
        let drain = tokio::time::sleep(self.drain_timeout);
        tokio::pin!(drain);
        while unsettled > 0 {
            tokio::select! {
                biased;
                Some((tag, outcome)) = ack_rx.recv() => {
                    consumer.settle(tag, &outcome);
                    unsettled = unsettled.saturating_sub(1);
                }
                _ = &mut drain => break,
            }
        }
        drop(consumer);
        cx.state.send_replace(SourceState::Stopped);
        Ok(())
    }
}

/// Runs the conformance kit against a [`MemoryQueueSource`].
#[derive(Clone, Default)]
pub struct MemoryQueueFixture {
    queue: MemoryQueue,
}

impl MemoryQueueFixture {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn queue(&self) -> &MemoryQueue {
        &self.queue
    }
}

#[async_trait]
impl Fixture for MemoryQueueFixture {
    async fn source(&self) -> Box<dyn Source> {
        Box::new(MemoryQueueSource::new(self.queue.clone()))
    }

    async fn produce(&self, payloads: &[String]) {
        for payload in payloads {
            self.queue.send(payload.clone());
        }
    }

    fn payload(&self, record: &Record) -> String {
        body(record)
    }
}

/// The body of a record made by a [`MemoryQueueSource`] (or anything else
/// with an SQS-like `body` field); the whole data as text otherwise.
pub fn body(record: &Record) -> String {
    match record.data.get("body").and_then(|body| body.as_str()) {
        Some(body) => body.to_string(),
        None => record.data.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry() -> Outcome {
        Outcome::Retry("test".into())
    }

    #[test]
    fn handed_out_messages_are_invisible_until_settled() {
        let queue = MemoryQueue::new();
        queue.send("a");
        queue.send("b");
        let consumer = queue.connect();
        let first = consumer.receive(1);
        assert_eq!(first[0].body, "a");
        let second = consumer.receive(10);
        assert_eq!(second.len(), 1, "a is in flight");
        assert!(consumer.settle(first[0].tag, &retry()));
        let again = consumer.receive(10);
        assert_eq!((again[0].body.as_str(), again[0].receive_count), ("a", 2));
        assert!(!consumer.settle(first[0].tag, &Outcome::Delivered), "an old tag settles nothing");
        assert!(consumer.settle(again[0].tag, &Outcome::Delivered));
        assert!(consumer.settle(second[0].tag, &Outcome::Reject("bad".into())));
        assert!(queue.is_empty());
        assert_eq!(queue.dead_letters(), ["b"]);
    }

    #[test]
    fn dropping_a_consumer_requeues_what_it_did_not_settle() {
        let queue = MemoryQueue::new();
        for body in ["a", "b", "c"] {
            queue.send(body);
        }
        let consumer = queue.connect();
        let handed = consumer.receive(2);
        assert!(consumer.settle(handed[1].tag, &Outcome::Delivered));
        drop(consumer);
        let next = queue.connect().receive(10);
        let bodies: Vec<&str> = next.iter().map(|d| d.body.as_str()).collect();
        assert_eq!(bodies, ["a", "c"], "a is back at the head");
    }
}
