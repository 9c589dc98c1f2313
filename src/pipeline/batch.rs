//! Collecting a lane's records into a batch: up to `size` records and
//! `max_bytes` bytes, waiting at most `window` after the first record.

use switchyard_sdk::Record;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::BatchConfig;

/// A lane's channel plus the record that did not fit the previous batch.
pub struct Pending {
    rx: mpsc::Receiver<Record>,
    carried: Option<Record>,
}

impl Pending {
    pub fn new(rx: mpsc::Receiver<Record>) -> Self {
        Self { rx, carried: None }
    }

    /// The next batch; `None` once the channel is closed and empty.
    pub async fn next(&mut self, config: &BatchConfig) -> Option<Vec<Record>> {
        let first = match self.carried.take() {
            Some(r) => r,
            None => self.rx.recv().await?,
        };
        let deadline = Instant::now() + config.window;
        let mut bytes = first.size;
        let mut records = vec![first];
        while records.len() < config.size.get() {
            let next = match self.rx.try_recv() {
                Ok(r) => Some(r),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                // The window passing ends the batch like a closed channel.
                Err(mpsc::error::TryRecvError::Empty) => {
                    tokio::time::timeout_at(deadline, self.rx.recv()).await.ok().flatten()
                }
            };
            let Some(record) = next else { break };
            if bytes + record.size > config.max_bytes {
                self.carried = Some(record);
                break;
            }
            bytes += record.size;
            records.push(record);
        }
        Some(records)
    }

    /// Drops everything not yet taken: each ack reports Retry.
    pub fn discard(&mut self) {
        self.carried = None;
        self.rx.close();
        while self.rx.try_recv().is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;
    use std::time::{Duration, SystemTime};

    use switchyard_sdk::Ack;

    use super::*;

    fn record(size: usize) -> Record {
        Record {
            id: String::new(),
            scope: None,
            key: None,
            data: serde_json::Value::Null,
            size,
            created_at: SystemTime::now(),
            deferred: None,
            ack: Ack::none(),
        }
    }

    fn config(size: usize, window_ms: u64, max_bytes: usize) -> BatchConfig {
        BatchConfig { size: NonZeroUsize::new(size).unwrap(), window: Duration::from_millis(window_ms), max_bytes }
    }

    #[tokio::test(start_paused = true)]
    async fn fills_to_size_or_bytes_then_carries_over() {
        let (tx, rx) = mpsc::channel(16);
        let mut p = Pending::new(rx);
        for size in [10, 10, 10, 10, 50] {
            tx.send(record(size)).await.unwrap();
        }
        assert_eq!(p.next(&config(3, 1000, 100)).await.unwrap().len(), 3, "size bound");
        let b = p.next(&config(3, 1000, 55)).await.unwrap();
        assert_eq!(b.len(), 1, "the 50-byte record would pass max_bytes");
        let b = p.next(&config(3, 0, 100)).await.unwrap();
        assert_eq!(b[0].size, 50, "carried over to the next batch");
    }

    #[tokio::test(start_paused = true)]
    async fn window_bounds_the_wait() {
        let (tx, rx) = mpsc::channel(16);
        let mut p = Pending::new(rx);
        tx.send(record(1)).await.unwrap();
        let started = Instant::now();
        let b = p.next(&config(10, 500, 100)).await.unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        drop(tx);
        assert!(p.next(&config(10, 500, 100)).await.is_none());
    }
}
