//! The source's metrics: connection attempts by outcome and the connected
//! gauge.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use lapin::types::FieldTable;
use metrics::{Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, SharedString, Unit};
use switchyard_amqp::RabbitMqSource;
use switchyard_sdk::SourceState;

use crate::support::{Broker, source_config, start_as, unique};

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
async fn connection_attempts_and_the_connected_gauge_are_measured() {
    recorded();
    let broker = Broker::connect().await;
    let queue = unique("metrics");
    let mapping = unique("metrics");
    let source = RabbitMqSource::new(&source_config(&broker.url, &queue))
        .expect("valid config")
        .with_backoff(Duration::from_millis(200), Duration::from_secs(1));
    let mut running = start_as(&mapping, source);
    let (errors, oks, connected) = (
        format!("switchyard_amqp_connections_total{{mapping={mapping},outcome=error}}"),
        format!("switchyard_amqp_connections_total{{mapping={mapping},outcome=ok}}"),
        format!("switchyard_source_connected{{mapping={mapping}}}"),
    );

    running.wait_for(Duration::from_secs(10), "Disconnected", |s| matches!(s, SourceState::Disconnected(_))).await;
    assert!(value(&errors).is_some_and(|n| n >= 1.0), "{errors}: {:?}", value(&errors));
    assert_eq!(value(&connected), Some(0.0));

    broker.declare(&queue, &mut FieldTable::default()).await;
    running.wait_for(Duration::from_secs(10), "Running", |s| *s == SourceState::Running).await;
    assert_eq!(value(&oks), Some(1.0));
    assert_eq!(value(&connected), Some(1.0));

    running.stop().await.expect("clean shutdown");
    assert_eq!(value(&connected), Some(0.0), "not connected after shutdown");
    broker.delete(&queue).await;
}
