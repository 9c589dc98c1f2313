use std::collections::BTreeMap;

/// Tracks the records of one ordered scope (a Kafka partition, a Kinesis shard)
/// and says how far the checkpoint may advance.
///
/// Offsets are registered in the order the source reads them; completions may
/// arrive in any order. The checkpoint is the offset after the highest record
/// such that it and every record before it finished: it never passes a record
/// that is still in flight or must be retried.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    /// offset -> finished
    pending: BTreeMap<i64, bool>,
    /// The next offset to read after a restart (Kafka's committed offset).
    committed: Option<i64>,
}

impl OffsetTracker {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, offset: i64) {
        self.pending.entry(offset).or_insert(false);
    }

    /// Marks `offset` finished; returns the new checkpoint when it moved.
    pub fn complete(&mut self, offset: i64) -> Option<i64> {
        match self.pending.get_mut(&offset) {
            Some(done) => *done = true,
            None => return None,
        }
        let mut advanced = None;
        while let Some(entry) = self.pending.first_entry() {
            if !*entry.get() {
                break;
            }
            advanced = Some(*entry.key() + 1);
            entry.remove();
        }
        if advanced.is_some() {
            self.committed = advanced;
        }
        advanced
    }

    /// Forgets every record at or after `offset`: the source rewinds there and
    /// reads them again.
    pub fn rewind(&mut self, offset: i64) {
        self.pending.retain(|&o, _| o < offset);
    }

    /// The current checkpoint, if any record has finished.
    pub fn committed(&self) -> Option<i64> {
        self.committed
    }

    /// The lowest offset not yet finished.
    pub fn lowest_pending(&self) -> Option<i64> {
        self.pending.iter().find(|(_, done)| !**done).map(|(o, _)| *o)
    }

    pub fn in_flight(&self) -> usize {
        self.pending.values().filter(|done| !**done).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_only_over_contiguous_finished_offsets() {
        let mut t = OffsetTracker::new();
        for o in 10..15 {
            t.register(o);
        }
        assert_eq!(t.complete(12), None, "10 and 11 are not done");
        assert_eq!(t.complete(10), Some(11));
        assert_eq!(t.complete(11), Some(13), "12 was already done");
        assert_eq!(t.lowest_pending(), Some(13));
        assert_eq!(t.complete(14), None);
        assert_eq!(t.complete(13), Some(15));
        assert_eq!(t.committed(), Some(15));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn rewind_drops_later_offsets() {
        let mut t = OffsetTracker::new();
        for o in 0..5 {
            t.register(o);
        }
        t.complete(0);
        t.complete(3);
        t.rewind(2);
        assert_eq!(t.in_flight(), 1, "only offset 1 is still tracked as pending");
        assert_eq!(t.complete(3), None, "a rewound offset is forgotten");
        assert_eq!(t.complete(1), Some(2));
    }
}
