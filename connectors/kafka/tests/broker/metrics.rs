//! The source's metrics: consumer lag from librdkafka's statistics, the
//! rebalances counter and synchronous commits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use metrics::{Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, SharedString, Unit};
use switchyard_kafka::{KafkaSource, StartingPosition};
use switchyard_sdk::Outcome;

use crate::support::{brokers, create_topic, produce, producer, source_config, start_as, unique};

/// Every value recorded in this test binary, by `name{label=value,...}`.
#[derive(Default)]
struct Recorded(Mutex<BTreeMap<String, f64>>);

struct Handle {
    key: String,
    recorded: Arc<Recorded>,
}

impl Handle {
    fn update(&self, f: impl FnOnce(&mut f64)) {
        let mut values = self.recorded.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(values.entry(self.key.clone()).or_default());
    }
}

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        self.update(|v| *v += value as f64);
    }
    fn absolute(&self, value: u64) {
        self.update(|v| *v = value as f64);
    }
}

impl GaugeFn for Handle {
    fn increment(&self, value: f64) {
        self.update(|v| *v += value);
    }
    fn decrement(&self, value: f64) {
        self.update(|v| *v -= value);
    }
    fn set(&self, value: f64) {
        self.update(|v| *v = value);
    }
}

impl HistogramFn for Handle {
    /// Counts observations: enough to see that a duration was recorded.
    fn record(&self, _value: f64) {
        self.update(|v| *v += 1.0);
    }
}

struct Recorder(Arc<Recorded>);

impl Recorder {
    fn handle(&self, key: &Key) -> Arc<Handle> {
        let mut labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        labels.sort();
        Arc::new(Handle { key: format!("{}{{{}}}", key.name(), labels.join(",")), recorded: self.0.clone() })
    }
}

impl metrics::Recorder for Recorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.handle(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.handle(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.handle(key))
    }
}

fn recorded() -> &'static Arc<Recorded> {
    static RECORDED: OnceLock<Arc<Recorded>> = OnceLock::new();
    RECORDED.get_or_init(|| {
        let recorded = Arc::new(Recorded::default());
        metrics::set_global_recorder(Recorder(recorded.clone())).expect("the only recorder in this test binary");
        recorded
    })
}

fn value(key: &str) -> Option<f64> {
    recorded().0.lock().unwrap_or_else(PoisonError::into_inner).get(key).copied()
}

#[tokio::test]
async fn lag_rebalances_and_commits_are_measured() {
    recorded();
    let brokers = brokers();
    let topic = create_topic(&brokers, "metrics", 1).await;
    let payloads: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    produce(&producer(&brokers), &topic, 0, &payloads).await;
    let mapping = unique("metrics");
    let config = source_config(&brokers, &topic, &unique("metrics"), StartingPosition::Earliest);
    let mut running = start_as(&mapping, KafkaSource::new(&config).expect("valid config"));
    for _ in &payloads {
        running.next(Duration::from_secs(20)).await.ack.complete(Outcome::Delivered);
    }

    // librdkafka reports statistics every 5 s.
    let lag = format!("switchyard_source_lag_records{{mapping={mapping},partition={topic}-0}}");
    let deadline = Instant::now() + Duration::from_secs(12);
    while value(&lag).is_none() {
        assert!(Instant::now() < deadline, "no {lag} within 12 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rebalances = value(&format!("switchyard_kafka_rebalances_total{{mapping={mapping}}}"));
    assert!(rebalances.is_some_and(|n| n >= 1.0), "rebalances: {rebalances:?}");

    running.stop().await.expect("clean shutdown");
    // The automatic commit (every second) or the one at shutdown.
    let commits = value(&format!("switchyard_kafka_commits_total{{mapping={mapping},outcome=ok}}"));
    assert!(commits.is_some_and(|n| n >= 1.0), "commits: {commits:?}");
}
