use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use switchyard_sdk::{
    Ack, ConnectorError, Envelope, Outcome, Record, SingleEnvelope, Source, SourceContext, SourceState,
};
use tokio_util::sync::CancellationToken;

use crate::{Schedule, ScheduleConfig, ScheduleError};

/// The account EventBridge's Scheduled Event names; there is no real one.
const ACCOUNT: &str = "000000000000";
const DEFAULT_REGION: &str = "us-east-1";

/// The longest single sleep. The wall clock is read again after each, so a
/// clock step or a suspended machine delays a tick by at most this much.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Where "now" comes from: the wall clock, or in tests one driven by tokio's
/// paused time.
type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Sends one EventBridge Scheduled Event per fire time of a schedule.
pub struct ScheduleSource {
    mapping: Arc<str>,
    schedule: Schedule,
    input: Option<Value>,
    region: String,
    clock: Clock,
}

impl ScheduleSource {
    pub fn new(mapping: &str, config: &ScheduleConfig) -> Result<Self, ScheduleError> {
        let schedule = Schedule::parse(&config.expression, config.timezone.as_deref())?;
        let region =
            std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()).unwrap_or_else(|| DEFAULT_REGION.to_string());
        Ok(Self { mapping: mapping.into(), schedule, input: config.input.clone(), region, clock: Arc::new(Utc::now) })
    }

    /// Reads "now" from `clock` instead of the wall clock.
    #[cfg(test)]
    fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Sends ticks until shut down (or the engine drops its receiver).
    async fn tick(&self, cx: &SourceContext) {
        let started = (self.clock)();
        let schedule = self.schedule.clone().started_at(started);
        let mut after = started;
        loop {
            let Some(fire) = schedule.next_after(after) else {
                // Returning would read as the source failing; there is just
                // nothing left to do until shutdown.
                tracing::info!(mapping = %self.mapping, "schedule has no further fire times");
                cx.shutdown.cancelled().await;
                return;
            };
            if !self.sleep_until(fire, &cx.shutdown).await {
                return;
            }
            let record = self.record(fire);
            tokio::select! {
                biased;
                () = cx.shutdown.cancelled() => return,
                sent = cx.out.send(record) => {
                    if sent.is_err() {
                        return;
                    }
                }
            }
            // Fire times that passed while the send waited on a full channel
            // are skipped, not sent in a burst.
            after = fire.max((self.clock)());
        }
    }

    /// Sleeps until the clock reads `fire`; false when shut down first.
    async fn sleep_until(&self, fire: DateTime<Utc>, shutdown: &CancellationToken) -> bool {
        loop {
            let left = match (fire - (self.clock)()).to_std() {
                Ok(left) if !left.is_zero() => left,
                // Zero or negative: the fire time has come.
                _ => return true,
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(left.min(MAX_SLEEP)) => {}
            }
        }
    }

    fn record(&self, fire: DateTime<Utc>) -> Record {
        let id = uuid::Uuid::new_v4().to_string();
        let data = match &self.input {
            Some(input) => input.clone(),
            None => scheduled_event(&id, fire, &self.region, &self.mapping),
        };
        let name = Arc::clone(&self.mapping);
        let ack = Ack::new(move |outcome| match outcome {
            Outcome::Delivered => {}
            Outcome::Retry(r) | Outcome::Reject(r) => {
                tracing::warn!(mapping = %name, reason = %r, "schedule tick was not delivered");
            }
        });
        Record {
            id,
            scope: None,
            key: None,
            size: data.to_string().len(),
            data,
            created_at: fire.into(),
            ack,
            deferred: None,
        }
    }
}

#[async_trait]
impl Source for ScheduleSource {
    fn envelope(&self) -> Arc<dyn Envelope> {
        Arc::new(SingleEnvelope)
    }

    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), ConnectorError> {
        cx.state.send_replace(SourceState::Running);
        self.tick(&cx).await;
        cx.state.send_replace(SourceState::Stopped);
        Ok(())
    }
}

/// EventBridge's Scheduled Event for a rule named after the mapping.
fn scheduled_event(id: &str, fire: DateTime<Utc>, region: &str, mapping: &str) -> Value {
    json!({
        "version": "0",
        "id": id,
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": fire.to_rfc3339_opts(SecondsFormat::Secs, true),
        "region": region,
        "resources": [format!("arn:aws:events:{region}:{ACCOUNT}:rule/{mapping}")],
        "detail": {},
    })
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use chrono::TimeDelta;
    use tokio::sync::{mpsc, watch};

    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    fn source(expression: &str, input: Option<Value>) -> ScheduleSource {
        let config = ScheduleConfig { expression: expression.into(), timezone: None, input };
        ScheduleSource::new("nightly", &config).unwrap()
    }

    /// A clock that starts at `base` and moves with tokio's (paused) time.
    fn paused_clock(base: DateTime<Utc>) -> Clock {
        let origin = tokio::time::Instant::now();
        Arc::new(move || base + TimeDelta::from_std(origin.elapsed()).unwrap())
    }

    struct Harness {
        records: mpsc::Receiver<Record>,
        state: watch::Receiver<SourceState>,
        shutdown: CancellationToken,
        run: tokio::task::JoinHandle<Result<(), ConnectorError>>,
    }

    fn start(source: ScheduleSource, capacity: usize) -> Harness {
        let (out, records) = mpsc::channel(capacity);
        let (state, state_rx) = watch::channel(SourceState::Starting);
        let shutdown = CancellationToken::new();
        let cx = SourceContext { mapping: "nightly".into(), out, shutdown: shutdown.clone(), state };
        Harness { records, state: state_rx, shutdown, run: tokio::spawn(Box::new(source).run(cx)) }
    }

    impl Harness {
        async fn time(&mut self) -> String {
            let record = self.records.recv().await.unwrap();
            record.data["time"].as_str().unwrap().to_string()
        }

        async fn stop(self) {
            self.shutdown.cancel();
            self.run.await.unwrap().unwrap();
            assert_eq!(*self.state.borrow(), SourceState::Stopped);
        }
    }

    fn region() -> String {
        std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()).unwrap_or_else(|| DEFAULT_REGION.into())
    }

    #[test]
    fn scheduled_event_has_eventbridge_shape() {
        let event = scheduled_event("abc", utc("2026-11-26T16:00:00.750Z"), "eu-west-1", "nightly");
        assert_eq!(
            event,
            json!({
                "version": "0",
                "id": "abc",
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "account": "000000000000",
                "time": "2026-11-26T16:00:00Z",
                "region": "eu-west-1",
                "resources": ["arn:aws:events:eu-west-1:000000000000:rule/nightly"],
                "detail": {}
            })
        );
    }

    #[test]
    fn record_carries_the_event_and_its_fire_time() {
        let fire = utc("2026-11-26T16:00:00Z");
        let record = source("rate(1 minute)", None).record(fire);
        assert_eq!(record.data["id"], record.id.as_str());
        assert!(uuid::Uuid::parse_str(&record.id).is_ok());
        assert_eq!(record.data["region"], region().as_str());
        assert_eq!(record.size, record.data.to_string().len());
        assert_eq!(record.created_at, SystemTime::from(fire));
        assert!(record.scope.is_none() && record.key.is_none());
        record.ack.complete(Outcome::Delivered);
    }

    #[test]
    fn input_replaces_the_whole_event() {
        let input = json!({"job": "nightly-report"});
        let record = source("rate(1 minute)", Some(input.clone())).record(utc("2026-11-26T16:00:00Z"));
        assert_eq!(record.data, input);
        assert_eq!(record.size, r#"{"job":"nightly-report"}"#.len());
        assert!(!record.id.is_empty());
    }

    #[test]
    fn a_batch_of_one_is_the_event_itself() {
        let event = json!({"detail-type": "Scheduled Event"});
        let envelope = source("rate(1 minute)", None).envelope();
        assert_eq!(envelope.event(&[&event]), event);
    }

    #[test]
    fn new_refuses_a_bad_expression() {
        let config = ScheduleConfig { expression: "rate(1 minutes)".into(), timezone: None, input: None };
        assert!(matches!(ScheduleSource::new("m", &config), Err(ScheduleError::RateNeedsSingular { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_ticks_every_period_from_the_start() {
        let source = source("rate(1 minute)", None).with_clock(paused_clock(utc("2026-11-26T10:00:00Z")));
        let mut h = start(source, 8);
        assert_eq!(h.time().await, "2026-11-26T10:01:00Z");
        assert_eq!(*h.state.borrow(), SourceState::Running);
        assert_eq!(h.time().await, "2026-11-26T10:02:00Z");
        assert_eq!(h.time().await, "2026-11-26T10:03:00Z");
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn cron_ticks_at_its_fire_times() {
        let source = source("cron(0/15 * * * ? *)", None).with_clock(paused_clock(utc("2026-11-26T10:07:30Z")));
        let mut h = start(source, 8);
        assert_eq!(h.time().await, "2026-11-26T10:15:00Z");
        assert_eq!(h.time().await, "2026-11-26T10:30:00Z");
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_channel_skips_ticks_instead_of_bursting() {
        let source = source("rate(1 minute)", None).with_clock(paused_clock(utc("2026-11-26T10:00:00Z")));
        let mut h = start(source, 1);
        // 10:01 fills the channel, 10:02 waits to be sent; nobody reads
        // until 10:05:30.
        tokio::time::sleep(Duration::from_secs(330)).await;
        assert_eq!(h.time().await, "2026-11-26T10:01:00Z");
        assert_eq!(h.time().await, "2026-11-26T10:02:00Z");
        // 10:03 to 10:05 passed while 10:02 waited: gone.
        assert_eq!(h.time().await, "2026-11-26T10:06:00Z");
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_wins_over_a_blocked_send() {
        let source = source("rate(1 minute)", None).with_clock(paused_clock(utc("2026-11-26T10:00:00Z")));
        let h = start(source, 1);
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(!h.run.is_finished());
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_ended_schedule_waits_for_shutdown() {
        let source = source("cron(0 0 1 1 ? 2020)", None).with_clock(paused_clock(utc("2026-11-26T10:00:00Z")));
        let mut h = start(source, 1);
        tokio::time::sleep(Duration::from_secs(3_600)).await;
        assert_eq!(*h.state.borrow(), SourceState::Running);
        assert!(h.records.try_recv().is_err());
        h.stop().await;
    }

    /// On the real clock: `rate(1 second)` sends two ticks a second apart.
    #[tokio::test]
    async fn rate_one_second_on_the_wall_clock() {
        let source = source("rate(1 second)", None);
        let mut h = start(source, 8);
        let mut records = Vec::new();
        for _ in 0..2 {
            let record = tokio::time::timeout(Duration::from_secs(5), h.records.recv())
                .await
                .expect("a tick within 5 s")
                .unwrap();
            records.push(record);
        }
        let times: Vec<DateTime<Utc>> = records.iter().map(|r| utc(r.data["time"].as_str().unwrap())).collect();
        assert_eq!(times[1] - times[0], TimeDelta::seconds(1));
        for (record, time) in records.iter().zip(&times) {
            assert_eq!(record.data["detail-type"], "Scheduled Event");
            assert_eq!(record.data["source"], "aws.events");
            assert_eq!(record.data["version"], "0");
            assert_eq!(record.data["detail"], json!({}));
            assert_eq!(
                record.data["resources"],
                json!([format!("arn:aws:events:{}:000000000000:rule/nightly", region())])
            );
            // `time` is the fire time cut to the second.
            let created: DateTime<Utc> = record.created_at.into();
            assert_eq!(created.timestamp(), time.timestamp());
        }
        h.stop().await;
    }
}
