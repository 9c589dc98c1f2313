//! A metrics recorder for connector tests: it keeps every value by
//! `name{label=value,...}` so a test can check what a source measured.
//! Histograms count observations. Install it with [`recorded`] before the
//! first metric is touched; it is the only recorder of its test binary.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use metrics::{Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, SharedString, Unit};

/// Every value recorded in this test binary, by `name{label=value,...}`.
#[derive(Default)]
pub struct Recorded(Mutex<BTreeMap<String, f64>>);

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

/// Installs the recorder (once per test binary) and returns what it holds.
pub fn recorded() -> &'static Arc<Recorded> {
    static RECORDED: OnceLock<Arc<Recorded>> = OnceLock::new();
    RECORDED.get_or_init(|| {
        let recorded = Arc::new(Recorded::default());
        metrics::set_global_recorder(Recorder(recorded.clone())).expect("the only recorder in this test binary");
        recorded
    })
}

/// The value of `name{label=value,...}` (labels sorted), once recorded.
pub fn value(key: &str) -> Option<f64> {
    recorded().0.lock().unwrap_or_else(PoisonError::into_inner).get(key).copied()
}
