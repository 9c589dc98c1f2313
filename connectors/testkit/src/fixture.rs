use async_trait::async_trait;
use switchyard_sdk::{Record, Source};

/// What a connector's test provides so the kit can drive its source against a
/// real broker.
///
/// A fixture owns one queue, topic or subject (and consumer group) that nothing
/// else uses during the run. Its methods are test harness code: panic with a
/// clear message when the broker cannot be reached.
#[async_trait]
pub trait Fixture: Send + Sync {
    /// A fresh source instance on the same queue/topic/group. Called once per
    /// run and again after every restart, so it must resume from what the
    /// broker remembers (committed offsets, unacked messages), not start over.
    async fn source(&self) -> Box<dyn Source>;

    /// Puts these payloads into the broker, in this order. Each is unique text.
    /// An ordered source must see them in this order within each scope (use
    /// one producer, and wait for each send when the client may reorder).
    async fn produce(&self, payloads: &[String]);

    /// The produced payload a record carries, read from `record.data`. Text
    /// that is not one of the produced payloads marks the record as foreign
    /// (left over from an earlier run): it is acked and otherwise ignored.
    fn payload(&self, record: &Record) -> String;

    /// Whether the source promises to keep the records of one
    /// [`Record::scope`] (a partition, a shard) in order. The kit then
    /// processes each scope the way the engine does for ordered sources and
    /// checks that order holds across retries and restarts.
    fn ordered(&self) -> bool {
        false
    }
}
