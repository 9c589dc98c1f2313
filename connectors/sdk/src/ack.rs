use std::fmt;

/// What became of a record, reported back to the source that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The function succeeded, the record was filtered out, or it was written to
    /// its failure destination: the source may acknowledge or commit it.
    Delivered,
    /// Not done: the source must make the record available again (nack with
    /// requeue, let the visibility timeout lapse, rewind the partition).
    Retry(String),
    /// Give up on the record without a failure destination: the source hands it
    /// to the broker's own dead-lettering where it has one (reject without
    /// requeue), else treats it like `Delivered`.
    Reject(String),
}

impl Outcome {
    pub fn is_delivered(&self) -> bool {
        matches!(self, Outcome::Delivered)
    }
}

type Callback = Box<dyn FnOnce(Outcome) + Send + Sync + 'static>;

/// The acknowledgement handle of one record.
///
/// Completing it runs the source's callback once. Dropping it without an outcome
/// runs the callback with [`Outcome::Retry`]: "dropped without a status" is a
/// defined state, so no code path can lose a record by forgetting to ack it.
pub struct Ack {
    callback: Option<Callback>,
}

/// The reason given when an `Ack` is dropped without an outcome.
pub const DROPPED: &str = "acknowledgement dropped without an outcome";

impl Ack {
    pub fn new(callback: impl FnOnce(Outcome) + Send + Sync + 'static) -> Self {
        Self { callback: Some(Box::new(callback)) }
    }

    /// For records nobody needs to hear back about (a schedule tick).
    pub fn none() -> Self {
        Self { callback: None }
    }

    /// Sends `(tag, outcome)` on `tx`: the usual shape for a source that
    /// acknowledges per message from its own task.
    pub fn channel<T: Send + Sync + 'static>(tag: T, tx: tokio::sync::mpsc::UnboundedSender<(T, Outcome)>) -> Self {
        Self::new(move |outcome| {
            // The source is gone when the receiver is closed; the broker will
            // redeliver whatever it did not hear about.
            let _ = tx.send((tag, outcome));
        })
    }

    pub fn complete(mut self, outcome: Outcome) {
        if let Some(callback) = self.callback.take() {
            callback(outcome);
        }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if let Some(callback) = self.callback.take() {
            callback(Outcome::Retry(DROPPED.to_string()));
        }
    }
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ack").field("pending", &self.callback.is_some()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_ack_reports_retry() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        drop(Ack::channel(7, tx));
        let (tag, outcome) = rx.try_recv().unwrap();
        assert_eq!(tag, 7);
        assert_eq!(outcome, Outcome::Retry(DROPPED.into()));
    }

    #[test]
    fn completed_ack_reports_once() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        Ack::channel("a", tx).complete(Outcome::Delivered);
        assert_eq!(rx.try_recv().unwrap(), ("a", Outcome::Delivered));
        assert!(rx.try_recv().is_err(), "a completed ack must not report again on drop");
    }
}
