//! The stream source: lists the stream's shards, runs one reader per shard
//! whose parents are done, and lists again to find the children of a
//! reshard.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesis::Client;
use switchyard_sdk::{Backoff, ConnectorError, Envelope, Source, SourceContext, SourceState, set_state};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};

use crate::checkpoint::{CheckpointStore, SHARD_END};
use crate::client;
use crate::config::{KinesisSourceConfig, SourceSettings, StartingPosition};
use crate::envelope::{KinesisEnvelope, StreamInfo};
use crate::error::{describe, is_throttled};
use crate::shard::{Exit, Metrics, Position, REQUEST_TIMEOUT, ShardReader, Shared, Tuning};

/// The most records of one shard read and not finished, by default.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 10_000;

/// A Kinesis Data Streams source. Build it with [`KinesisSource::new`]; it
/// connects when it runs, and retries with backoff for as long as it runs.
pub struct KinesisSource {
    settings: SourceSettings,
    store: Arc<dyn CheckpointStore>,
    tuning: Tuning,
}

impl KinesisSource {
    /// Checks the configuration; does not connect. Checkpoints go to `store`
    /// under the mapping's name.
    pub fn new(config: &KinesisSourceConfig, store: Arc<dyn CheckpointStore>) -> Result<Self, ConnectorError> {
        let settings = config.validate()?;
        let tuning = Tuning {
            poll_interval: settings.poll_interval,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            drain_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            checkpoint_interval: Duration::from_millis(100),
        };
        Ok(Self { settings, store, tuning })
    }

    /// The most records of one shard read and not finished (10,000; at least
    /// 1). Set it above the mapping's batch size so a full batch can form.
    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.tuning.max_in_flight = max.max(1);
        self
    }

    /// How long shutdown waits for the acks of records handed out (10 s).
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.tuning.drain_timeout = timeout;
        self
    }

    /// The wait after a failed request: `initial`, doubling up to `max`
    /// (1 s and 30 s).
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.tuning.backoff_initial = initial;
        self.tuning.backoff_max = max.max(initial);
        self
    }

    /// The shortest time between two checkpoint saves of one shard (100 ms):
    /// a crash repeats at most the records finished in that time, on top of
    /// those in flight.
    pub fn with_checkpoint_interval(mut self, interval: Duration) -> Self {
        self.tuning.checkpoint_interval = interval;
        self
    }

    pub fn stream_name(&self) -> &str {
        &self.settings.stream.name
    }
}

/// What the source knows about one shard.
#[derive(Debug)]
struct ShardEntry {
    parents: Vec<String>,
    /// Has an ending sequence number: a reshard closed it.
    closed: bool,
    status: Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Not started: a parent is not finished yet, or it was just listed.
    Waiting,
    Reading,
    /// Done with. `read` is false for a closed shard that was skipped rather
    /// than read (a `latest` start has nothing to read in a closed shard).
    Finished {
        read: bool,
    },
}

/// The shards of a ListShards answer: `(id, parents, closed)`.
type Listing = Vec<(String, Vec<String>, bool)>;

/// The stream's ARN, from the config or DescribeStreamSummary.
async fn stream_info(
    client: &Client,
    settings: &SourceSettings,
    region: &str,
    metrics: &Metrics,
) -> Result<StreamInfo, String> {
    let name = &settings.stream.name;
    if let Some(arn) = &settings.stream.arn {
        return Ok(StreamInfo::from_arn(name, arn, region));
    }
    let request = client.describe_stream_summary().stream_name(name).send();
    match timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(output)) => {
            metrics.request("describe_stream_summary", "ok");
            let arn = output.stream_description_summary().map(|s| s.stream_arn().to_string()).unwrap_or_default();
            if arn.is_empty() {
                return Err(format!("Kinesis returned no ARN for stream {name}"));
            }
            Ok(StreamInfo::from_arn(name, &arn, region))
        }
        Ok(Err(e)) => {
            metrics.request("describe_stream_summary", if is_throttled(&e) { "throttled" } else { "error" });
            Err(describe(&e, "DescribeStreamSummary", name))
        }
        Err(_) => {
            metrics.request("describe_stream_summary", "error");
            Err(format!("Kinesis did not answer DescribeStreamSummary on stream {name} in time"))
        }
    }
}

/// Every shard of the stream, open and closed (ListShards, page by page).
async fn list_shards(shared: &Shared) -> Result<Listing, String> {
    let name = &shared.stream.name;
    let mut listing = Listing::new();
    let mut token: Option<String> = None;
    loop {
        // A page after the first names only the token: Kinesis refuses both.
        let request = match &token {
            Some(token) => shared.client.list_shards().next_token(token),
            None => shared.client.list_shards().stream_name(name),
        };
        let output = match timeout(REQUEST_TIMEOUT, request.send()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => {
                shared.metrics.request("list_shards", if is_throttled(&e) { "throttled" } else { "error" });
                return Err(describe(&e, "ListShards", name));
            }
            Err(_) => {
                shared.metrics.request("list_shards", "error");
                return Err(format!("Kinesis did not answer ListShards on stream {name} in time"));
            }
        };
        shared.metrics.request("list_shards", "ok");
        for shard in output.shards() {
            let parents: Vec<String> = [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
                .into_iter()
                .flatten()
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect();
            let closed = shard.sequence_number_range().and_then(|r| r.ending_sequence_number()).is_some();
            listing.push((shard.shard_id().to_string(), parents, closed));
        }
        match output.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_string()),
            _ => return Ok(listing),
        }
    }
}

/// The coordinator's view of the stream.
struct Shards {
    shared: Arc<Shared>,
    starting_position: StartingPosition,
    /// Sorted by id, so shards start in a stable order.
    entries: BTreeMap<String, ShardEntry>,
    readers: JoinSet<(Arc<str>, Exit)>,
}

impl Shards {
    fn merge(&mut self, listing: Listing) {
        for (id, parents, closed) in listing {
            let entry = self.entries.entry(id).or_insert(ShardEntry { parents, closed, status: Status::Waiting });
            entry.closed |= closed;
        }
    }

    /// A parent is done when it was finished, or when the stream no longer
    /// lists it (its records expired).
    fn parents_done(&self, entry: &ShardEntry) -> bool {
        entry
            .parents
            .iter()
            .all(|p| self.entries.get(p).is_none_or(|parent| matches!(parent.status, Status::Finished { .. })))
    }

    fn parent_read(&self, entry: &ShardEntry) -> bool {
        entry
            .parents
            .iter()
            .any(|p| self.entries.get(p).is_some_and(|parent| parent.status == Status::Finished { read: true }))
    }

    /// Starts a reader for every waiting shard whose parents are done.
    async fn start_ready(&mut self) -> Result<(), String> {
        loop {
            let mut changed = false;
            let ready: Vec<String> = self
                .entries
                .iter()
                .filter(|(_, e)| e.status == Status::Waiting && self.parents_done(e))
                .map(|(id, _)| id.clone())
                .collect();
            for id in ready {
                let key = self.shared.key(&id);
                let stored = self.shared.store.load(&self.shared.mapping, &key).await.map_err(|e| {
                    format!("reading the checkpoint of shard {id} of stream {}: {e}", self.shared.stream.name)
                })?;
                let Some(entry) = self.entries.get(&id) else { continue };
                let position = match stored.as_deref() {
                    Some(SHARD_END) => None,
                    Some(sequence) => Some(Position::After(sequence.to_string())),
                    // The child of a shard this mapping read: its records
                    // follow the parent's, from its first one.
                    None if self.parent_read(entry) => Some(match self.starting_position {
                        StartingPosition::AtTimestamp(at) => Position::AtTimestamp(at),
                        _ => Position::TrimHorizon,
                    }),
                    // Nothing arrives in a closed shard any more.
                    None if entry.closed && self.starting_position == StartingPosition::Latest => {
                        if let Some(entry) = self.entries.get_mut(&id) {
                            entry.status = Status::Finished { read: false };
                        }
                        changed = true;
                        continue;
                    }
                    None => Some(match self.starting_position {
                        StartingPosition::TrimHorizon => Position::TrimHorizon,
                        StartingPosition::Latest => Position::Latest,
                        StartingPosition::AtTimestamp(at) => Position::AtTimestamp(at),
                    }),
                };
                let status = match position {
                    None => Status::Finished { read: true },
                    Some(position) => {
                        let reader = ShardReader::new(self.shared.clone(), &id, position);
                        self.readers.spawn(reader.run());
                        Status::Reading
                    }
                };
                if let Some(entry) = self.entries.get_mut(&id) {
                    entry.status = status;
                }
                changed = true;
            }
            if !changed {
                return Ok(());
            }
        }
    }

    fn finished(&mut self, shard: &str, exit: Exit) {
        if let Some(entry) = self.entries.get_mut(shard) {
            entry.status = match exit {
                Exit::Finished => Status::Finished { read: true },
                // Only on shutdown; nothing starts after it anyway.
                Exit::Stopped => Status::Waiting,
            };
        }
    }
}

#[async_trait]
impl Source for KinesisSource {
    fn envelope(&self) -> Arc<dyn Envelope> {
        Arc::new(KinesisEnvelope)
    }

    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), ConnectorError> {
        let SourceContext { mapping, out, shutdown, state } = cx;
        let stop = shutdown.child_token();
        let metrics = Metrics::new(&mapping);
        let connected = client::connect(&self.settings.client, &self.settings.stream).await;
        let mut backoff = Backoff::new(self.tuning.backoff_initial, self.tuning.backoff_max);
        let name = self.settings.stream.name.clone();

        // Records carry the stream's ARN: nothing is read before it is known.
        let stream = loop {
            match stream_info(&connected.client, &self.settings, &connected.region, &metrics).await {
                Ok(stream) => break stream,
                Err(reason) => {
                    let wait = backoff.next_wait();
                    metrics_disconnected(&state, &mapping, &name, &reason, wait);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.cancelled() => {
                            set_state(&state, SourceState::Stopped);
                            return Ok(());
                        }
                    }
                }
            }
        };
        backoff.reset();
        let shared = Arc::new(Shared {
            client: connected.client,
            stream,
            store: self.store.clone(),
            mapping: mapping.clone(),
            state,
            out,
            stop: stop.clone(),
            tuning: self.tuning.clone(),
            metrics,
        });
        let mut shards = Shards {
            shared: shared.clone(),
            starting_position: self.settings.starting_position,
            entries: BTreeMap::new(),
            readers: JoinSet::new(),
        };
        let mut next_listing = Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(joined) = shards.readers.join_next() => match joined {
                    Ok((shard, exit)) => {
                        shards.finished(&shard, exit);
                        // Its children are usually listed already.
                        if exit == Exit::Finished
                            && let Err(reason) = shards.start_ready().await
                        {
                            shared.disconnected(reason, Duration::ZERO);
                        }
                    }
                    Err(e) => {
                        // The shard's entry stays `Reading`: nothing reads it
                        // until a restart, which is louder than a silent gap.
                        tracing::error!(mapping = %mapping, error = %e, "a Kinesis shard reader panicked");
                    }
                },
                _ = sleep_until(next_listing) => {
                    let listed = match list_shards(&shared).await {
                        Ok(listing) => {
                            shards.merge(listing);
                            shards.start_ready().await
                        }
                        Err(reason) => Err(reason),
                    };
                    match listed {
                        Ok(()) => {
                            backoff.reset();
                            if shards.readers.is_empty() {
                                // Every shard finished: nothing else says the
                                // source is up.
                                shared.running();
                            }
                            next_listing = Instant::now() + self.settings.shard_discovery_interval;
                        }
                        Err(reason) => {
                            let wait = backoff.next_wait();
                            shared.disconnected(reason, wait);
                            next_listing = Instant::now() + wait;
                        }
                    }
                }
            }
        }

        // Every reader drains its own acks and saves its checkpoint.
        while let Some(joined) = shards.readers.join_next().await {
            if let Err(e) = joined {
                tracing::error!(mapping = %mapping, error = %e, "a Kinesis shard reader panicked");
            }
        }
        set_state(&shared.state, SourceState::Stopped);
        tracing::info!(mapping = %mapping, stream = %shared.stream.name, "Kinesis source stopped");
        Ok(())
    }
}

/// Before the shared state exists: the stream could not be described.
fn metrics_disconnected(
    state: &tokio::sync::watch::Sender<SourceState>,
    mapping: &str,
    stream: &str,
    reason: &str,
    retry_in: Duration,
) {
    metrics::gauge!("switchyard_source_connected", "mapping" => mapping.to_string()).set(0.0);
    if set_state(state, SourceState::Disconnected(reason.to_string())) {
        tracing::error!(mapping, stream, reason, ?retry_in, "Kinesis source disconnected; retrying");
    }
}
