use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use switchyard_sdk::{Ack, ConnectorError, Outcome, Record, SourceContext, SourceState};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinError, JoinHandle};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::completer::{Action, Completer, When};
use crate::{Fixture, Violation};

/// The capacity of the channel between the source and the kit, as in the
/// engine: a source must cope with a full channel (backpressure).
pub const CHANNEL_CAPACITY: usize = 64;

/// A payload is retried or dropped at most this many times by choice, so a run
/// always converges.
const MAX_FAILURES: u32 = 3;
/// Acks held back across each restart: between 1 and this many.
const HOLD_MAX: usize = 4;
/// Records received between the first held ack and the cancel, so later records
/// get acked while the held ones are still unresolved.
const HOLD_WINDOW: usize = 32;
/// How far the window stretches while an ordered scope with a held record has
/// not yet seen a later record of its own acked (a filtered one): that is the
/// moment a checkpoint could wrongly pass the held record.
const HOLD_WINDOW_MAX: usize = 4 * HOLD_WINDOW;
/// A restart does not wait longer than this for the next record.
const HOLD_IDLE: Duration = Duration::from_millis(20);
/// The longest delay before the kit completes an ack.
const MAX_DELAY_MS: u64 = 5;
/// The scope name for records of an ordered source that carry none.
const UNSCOPED: &str = "(no scope)";

/// One conformance run: what to produce and how hard to push the source.
#[derive(Debug, Clone)]
pub struct Conformance {
    /// How many unique payloads to produce.
    pub messages: usize,
    /// Share of records whose ack is completed with `Outcome::Retry`.
    pub retry_ratio: f64,
    /// Share of records whose ack is dropped without an outcome (which the
    /// SDK reports as a retry).
    pub drop_ratio: f64,
    /// Share of payloads the emulated engine filters out: their records are
    /// acked `Delivered` on receipt, ahead of earlier records of their scope
    /// still in flight. The function never sees them, so they are outside the
    /// order check.
    pub filter_ratio: f64,
    /// How many times the source is shut down and replaced by a fresh one,
    /// spread evenly over the run.
    pub restarts: usize,
    /// How long the whole run may take before a final restart; that restart
    /// gets a quarter of it again.
    pub timeout: Duration,
    /// How long `run` may take to return after its shutdown token is cancelled.
    pub shutdown_timeout: Duration,
    /// Seeds every choice the kit makes: same seed, same outcomes for the same
    /// sequence of records.
    pub seed: u64,
}

impl Default for Conformance {
    fn default() -> Self {
        Self {
            messages: 200,
            retry_ratio: 0.2,
            drop_ratio: 0.1,
            filter_ratio: 0.1,
            restarts: 2,
            timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(10),
            seed: 0x5317_c4ad,
        }
    }
}

/// What a successful run observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Payloads produced.
    pub produced: usize,
    /// Payloads delivered at least once (equal to `produced` on success).
    pub delivered: usize,
    /// Deliveries beyond the first of a payload (at-least-once duplicates).
    pub duplicates: usize,
    /// Records received for a payload already received before.
    pub redeliveries: usize,
    /// Acks completed with `Retry` or dropped (held back, forced by an ordered
    /// scope's rewind, or received during a shutdown included).
    pub retries: usize,
    /// Times the source was shut down and replaced.
    pub restarts: usize,
    /// Records carrying no produced payload (left over from an earlier run).
    pub foreign: usize,
}

impl Conformance {
    /// Produces the payloads, runs the fixture's source the way the engine
    /// does (retrying, dropping, delaying and holding back acks, restarting
    /// the source) and checks that every payload is delivered and, for an
    /// ordered source, that each scope stays in order.
    ///
    /// # Panics
    ///
    /// On a configuration that cannot work (no messages, ratios outside 0..=1).
    pub async fn run(&self, fixture: &dyn Fixture) -> Result<Report, Violation> {
        self.validate();
        let payloads = self.payloads();
        fixture.produce(&payloads).await;
        let mut driver = Driver::new(self, fixture, payloads);
        let result = driver.drive().await;
        if let Err(violation) = &result {
            tracing::warn!(%violation, report = ?driver.report, "conformance run failed");
        }
        result
    }

    fn validate(&self) {
        assert!(self.messages > 0, "Conformance::messages must be at least 1");
        for (name, ratio) in
            [("retry_ratio", self.retry_ratio), ("drop_ratio", self.drop_ratio), ("filter_ratio", self.filter_ratio)]
        {
            assert!((0.0..=1.0).contains(&ratio), "Conformance::{name} must be within 0..=1, got {ratio}");
        }
        assert!(self.retry_ratio + self.drop_ratio <= 1.0, "Conformance::retry_ratio + drop_ratio must not exceed 1");
    }

    /// Unique across runs as well, so records left in a broker by an earlier
    /// run are recognised as foreign instead of counting as deliveries.
    fn payloads(&self) -> Vec<String> {
        let run = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
        (0..self.messages).map(|i| format!("conformance-{}-{run:x}-{i}", self.seed)).collect()
    }
}

/// What the kit knows about one produced payload.
#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    received: u32,
    delivered: u32,
    failures: u32,
}

/// The engine's view of one ordered scope.
#[derive(Debug, Default)]
struct Lane {
    /// The highest payload index first delivered in this scope.
    max_delivered: Option<usize>,
    /// A record of this scope was retried: later ones are retried too until the
    /// source rewinds to it. Forgotten on restart.
    blocked_at: Option<usize>,
    /// A record of this scope is held back: later ones wait behind it (and are
    /// held too) until the restart.
    holding: bool,
}

/// A restart in preparation.
#[derive(Debug)]
struct Hold {
    /// Acks still to hold back.
    to_hold: usize,
    /// Records received since the hold began.
    received: usize,
    /// Ordered scopes holding a record that no later record of theirs has
    /// overtaken yet.
    waiting: BTreeSet<Arc<str>>,
    /// Cancel anyway when no record arrives until then.
    idle_until: Instant,
}

/// The source run currently driven.
struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ConnectorError>>,
    rx: mpsc::Receiver<Record>,
    /// False once every sender is gone: `recv` would return `None` at once.
    rx_open: bool,
    _state: watch::Receiver<SourceState>,
}

impl Hold {
    fn done(&self) -> bool {
        self.received >= HOLD_WINDOW && (self.waiting.is_empty() || self.received >= HOLD_WINDOW_MAX)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A run abandoned on a violation must not go on in the background.
        self.shutdown.cancel();
        self.task.abort();
    }
}

enum Event {
    Record(Option<Record>),
    Ended(Result<Result<(), ConnectorError>, JoinError>),
    HoldIdle,
    Deadline,
}

struct Driver<'a> {
    cfg: &'a Conformance,
    fixture: &'a dyn Fixture,
    ordered: bool,
    rng: StdRng,
    payloads: Vec<String>,
    index: HashMap<String, usize>,
    filtered: Vec<bool>,
    ledger: Vec<Entry>,
    lanes: BTreeMap<Arc<str>, Lane>,
    completer: Completer,
    held: Vec<Ack>,
    hold: Option<Hold>,
    /// Planned restarts done so far.
    planned: usize,
    run: Option<Running>,
    report: Report,
}

impl<'a> Driver<'a> {
    fn new(cfg: &'a Conformance, fixture: &'a dyn Fixture, payloads: Vec<String>) -> Self {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let filtered = payloads.iter().map(|_| rng.random_bool(cfg.filter_ratio)).collect();
        let index = payloads.iter().enumerate().map(|(i, p)| (p.clone(), i)).collect();
        Self {
            cfg,
            fixture,
            ordered: fixture.ordered(),
            rng,
            ledger: vec![Entry::default(); payloads.len()],
            report: Report { produced: payloads.len(), ..Report::default() },
            payloads,
            index,
            filtered,
            lanes: BTreeMap::new(),
            completer: Completer::default(),
            held: Vec::new(),
            hold: None,
            planned: 0,
            run: None,
        }
    }

    async fn drive(&mut self) -> Result<Report, Violation> {
        let mut deadline = Instant::now() + self.cfg.timeout;
        // Deliveries counted when the final restart was made.
        let mut last_chance: Option<usize> = None;
        self.start().await;
        loop {
            self.completer.reap().map_err(callback_panicked)?;
            if self.report.delivered == self.payloads.len() {
                self.stop().await?;
                return Ok(self.report.clone());
            }
            if self.hold.is_none() && self.restart_due() {
                // Let every outcome decided so far reach the source first: a
                // record acked during the hold is then the last word on its
                // scope, and a checkpoint that passes a held record stays wrong.
                self.completer.flush().await.map_err(callback_panicked)?;
                self.hold = Some(Hold {
                    to_hold: self.rng.random_range(1..=HOLD_MAX),
                    received: 0,
                    waiting: BTreeSet::new(),
                    idle_until: Instant::now() + HOLD_IDLE,
                });
            }
            if self.hold.as_ref().is_some_and(Hold::done) {
                self.restart().await?;
                continue;
            }
            let hold_idle = self.hold.as_ref().map(|hold| hold.idle_until);
            let Some(run) = self.run.as_mut() else {
                return Err(Violation::SourceFailed("internal: no source running".into()));
            };
            let event = tokio::select! {
                biased;
                record = run.rx.recv(), if run.rx_open => Event::Record(record),
                ended = &mut run.task => Event::Ended(ended),
                _ = sleep_until(hold_idle.unwrap_or(deadline)), if hold_idle.is_some() => Event::HoldIdle,
                _ = sleep_until(deadline) => Event::Deadline,
            };
            match event {
                Event::Record(Some(record)) => self.receive(record)?,
                Event::Record(None) => {
                    // Every sender is gone: the run's task is about to end.
                    if let Some(run) = self.run.as_mut() {
                        run.rx_open = false;
                    }
                }
                Event::Ended(result) => {
                    self.run = None;
                    return Err(self.ended_early(result));
                }
                Event::HoldIdle => self.restart().await?,
                Event::Deadline => match last_chance {
                    None => {
                        tracing::debug!(missing = self.missing().len(), "timeout: restarting the source a last time");
                        last_chance = Some(self.report.delivered);
                        self.hold = None;
                        self.restart().await?;
                        deadline = Instant::now() + self.cfg.timeout / 4;
                    }
                    Some(mark) => {
                        let missing = self.missing();
                        self.run = None;
                        return Err(if self.report.delivered > mark {
                            Violation::Timeout { missing: missing.len() }
                        } else {
                            Violation::Lost { missing }
                        });
                    }
                },
            }
        }
    }

    /// The next planned restart is due once its share of payloads was delivered.
    fn restart_due(&self) -> bool {
        let next = self.planned + 1;
        next <= self.cfg.restarts
            && self.report.delivered >= (self.payloads.len() * next).div_ceil(self.cfg.restarts + 1)
    }

    fn receive(&mut self, record: Record) -> Result<(), Violation> {
        let payload = self.fixture.payload(&record);
        let Some(&i) = self.index.get(&payload) else {
            self.report.foreign += 1;
            tracing::debug!(id = %record.id, "foreign record acked");
            record.ack.complete(Outcome::Delivered);
            return Ok(());
        };
        self.note_received(i);
        if let Some(hold) = &mut self.hold {
            hold.received += 1;
            hold.idle_until = Instant::now() + HOLD_IDLE;
        }
        let Record { scope, ack, .. } = record;
        let lane = self.ordered.then(|| scope.unwrap_or_else(|| Arc::from(UNSCOPED)));

        if self.filtered[i] {
            // Acked at once, possibly ahead of earlier records of its scope
            // that are still in flight: a checkpoint must not pass those.
            self.delivered(i, None)?;
            self.completer.complete(None, ack, Action::Deliver, When::Now);
            if let (Some(hold), Some(key)) = (&mut self.hold, &lane) {
                hold.waiting.remove(key);
            }
            return Ok(());
        }

        if let Some(key) = &lane {
            let state = self.lanes.entry(key.clone()).or_default();
            if let Some(blocked_at) = state.blocked_at {
                if i > blocked_at {
                    // Like the engine: nothing after a retried record of a scope
                    // is processed before the retried one comes back.
                    // The engine turns these down without invoking anything.
                    self.report.retries += 1;
                    self.completer.complete(Some(key), ack, Action::Retry, When::InScope(Duration::ZERO));
                    return Ok(());
                }
                // The source rewound to (or before) the retried record.
                state.blocked_at = None;
            }
            if state.holding {
                self.held.push(ack);
                return Ok(());
            }
        }

        if let Some(hold) = self.hold.as_mut().filter(|hold| hold.to_hold > 0) {
            hold.to_hold -= 1;
            if let Some(key) = &lane {
                hold.waiting.insert(key.clone());
                self.lanes.entry(key.clone()).or_default().holding = true;
            }
            self.held.push(ack);
            return Ok(());
        }

        let action = self.verdict(i);
        match action {
            Action::Deliver => self.delivered(i, lane.as_ref())?,
            Action::Retry | Action::Drop => {
                self.report.retries += 1;
                if let Some(key) = &lane {
                    self.lanes.entry(key.clone()).or_default().blocked_at = Some(i);
                }
            }
        }
        let when = if lane.is_some() {
            When::InScope(self.delay())
        } else {
            match self.rng.random_range(0..3) {
                0 => When::Now,
                1 => When::Spawned(Duration::ZERO),
                _ => When::Spawned(self.delay()),
            }
        };
        self.completer.complete(lane.as_ref(), ack, action, when);
        Ok(())
    }

    /// What the function makes of a record this time.
    fn verdict(&mut self, i: usize) -> Action {
        let roll: f64 = self.rng.random();
        let entry = &mut self.ledger[i];
        if entry.failures >= MAX_FAILURES {
            return Action::Deliver;
        }
        let action = if roll < self.cfg.retry_ratio {
            Action::Retry
        } else if roll < self.cfg.retry_ratio + self.cfg.drop_ratio {
            Action::Drop
        } else {
            Action::Deliver
        };
        if action != Action::Deliver {
            entry.failures += 1;
        }
        action
    }

    /// Half the time none, as when the function answers at once.
    fn delay(&mut self) -> Duration {
        if self.rng.random_bool(0.5) {
            Duration::ZERO
        } else {
            Duration::from_millis(self.rng.random_range(1..=MAX_DELAY_MS))
        }
    }

    fn note_received(&mut self, i: usize) {
        let entry = &mut self.ledger[i];
        entry.received += 1;
        if entry.received > 1 {
            self.report.redeliveries += 1;
        }
    }

    /// Counts a delivery of payload `i`; in an ordered scope, a first delivery
    /// must come after every payload of that scope first delivered before it.
    fn delivered(&mut self, i: usize, lane: Option<&Arc<str>>) -> Result<(), Violation> {
        let entry = &mut self.ledger[i];
        entry.delivered += 1;
        if entry.delivered > 1 {
            self.report.duplicates += 1;
            return Ok(());
        }
        self.report.delivered += 1;
        let Some(key) = lane else { return Ok(()) };
        let state = self.lanes.entry(key.clone()).or_default();
        match state.max_delivered {
            Some(later) if later > i => Err(Violation::OutOfOrder {
                scope: key.to_string(),
                detail: format!(
                    "{} was delivered for the first time after {}, which was produced later",
                    self.payloads[i], self.payloads[later]
                ),
            }),
            _ => {
                state.max_delivered = Some(i);
                Ok(())
            }
        }
    }

    fn missing(&self) -> Vec<String> {
        self.ledger
            .iter()
            .zip(&self.payloads)
            .filter(|(entry, _)| entry.delivered == 0)
            .map(|(_, payload)| payload.clone())
            .collect()
    }

    async fn start(&mut self) {
        let source = self.fixture.source().await;
        let (out, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (state, state_rx) = watch::channel(SourceState::Starting);
        let shutdown = CancellationToken::new();
        let cx = SourceContext { mapping: Arc::from("conformance"), out, shutdown: shutdown.clone(), state };
        let task = tokio::spawn(source.run(cx));
        self.run = Some(Running { shutdown, task, rx, rx_open: true, _state: state_rx });
    }

    async fn restart(&mut self) -> Result<(), Violation> {
        if self.hold.take().is_some() {
            self.planned += 1;
        }
        tracing::debug!(restart = self.report.restarts + 1, held = self.held.len(), "restarting the source");
        self.stop().await?;
        self.report.restarts += 1;
        // A fresh run: the engine forgets which scopes were waiting for what.
        for lane in self.lanes.values_mut() {
            lane.blocked_at = None;
            lane.holding = false;
        }
        self.start().await;
        Ok(())
    }

    /// Shuts the running source down the way the engine does and waits for
    /// `run` to return.
    async fn stop(&mut self) -> Result<(), Violation> {
        let Some(mut run) = self.run.take() else {
            return Ok(());
        };
        run.shutdown.cancel();
        // Only now: these acks were unresolved when the source was told to
        // stop, so it must hand their records out again after the restart.
        self.report.retries += self.held.len();
        self.held.clear();
        let deadline = Instant::now() + self.cfg.shutdown_timeout;
        let result = loop {
            tokio::select! {
                biased;
                record = run.rx.recv(), if run.rx_open => match record {
                    // The engine invokes nothing after shutdown: these come back too.
                    Some(record) => self.discard(record),
                    None => run.rx_open = false,
                },
                result = &mut run.task => break result,
                _ = sleep_until(deadline) => {
                    return Err(Violation::ShutdownTimeout { waited: self.cfg.shutdown_timeout });
                }
            }
        };
        // Records still buffered are dropped with the channel.
        drop(run);
        self.completer.finish().await.map_err(callback_panicked)?;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Violation::SourceFailed(format!("run() returned an error on shutdown: {e}"))),
            Err(e) => Err(Violation::SourceFailed(format!("run() panicked on shutdown: {e}"))),
        }
    }

    /// A record received after the cancel: its ack is dropped (a retry).
    fn discard(&mut self, record: Record) {
        if let Some(&i) = self.index.get(&self.fixture.payload(&record)) {
            self.note_received(i);
            self.report.retries += 1;
        }
        drop(record);
    }

    fn ended_early(&self, result: Result<Result<(), ConnectorError>, JoinError>) -> Violation {
        match result {
            Ok(Ok(())) => {
                tracing::warn!("run() returned before its shutdown token was cancelled");
                Violation::Lost { missing: self.missing() }
            }
            Ok(Err(e)) => Violation::SourceFailed(format!("run() failed: {e}")),
            Err(e) => Violation::SourceFailed(format!("run() panicked: {e}")),
        }
    }
}

fn callback_panicked(e: JoinError) -> Violation {
    Violation::SourceFailed(format!("an ack callback panicked: {e}"))
}
