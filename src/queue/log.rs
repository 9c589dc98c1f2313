//! The accept log: where an accepted async event is made durable before its
//! 202, ahead of the SQLite queue.
//!
//! Writing an event straight into SQLite costs a b-tree insert, two index
//! updates and about a dozen WAL frame writes per commit, and the commit's
//! fsync waits behind all of it. Here one thread appends every event waiting
//! at that moment to a segment file with one `pwrite` and makes it durable
//! with one `fdatasync` (group commit), then answers. The same thread then
//! moves the logged events into the SQLite queue in large transactions, a few
//! milliseconds later, recording in the same transaction the last sequence
//! number moved. At start, whatever the log holds beyond that number is moved
//! first, so an event that got its 202 is never lost and never queued twice
//! by the log. Moves are committed without a sync of their own; one synced
//! move per filled segment makes the earlier ones durable too.
//!
//! Segments are files of a fixed size, zero-filled when created and reused
//! once every record in them has been durably moved, so a sync never has to
//! record a file growing. A record is
//!
//! ```text
//! len u32 | crc32 u32 | seq u64 | enqueued_at i64 | request_id, function, source (u16 length + bytes each) | payload
//! ```
//!
//! (little-endian; `len` counts from `seq` on and the CRC covers the same
//! bytes). Reading a segment stops at the first record that is torn, fails its
//! CRC, or does not follow its predecessor's `seq`: the rest is either an
//! unfinished write, which was never acknowledged, or an older use of the
//! segment, which was moved already.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};

use super::store::{Moved, NewEvent, Store, StoreError};

/// How the log is laid out and how eagerly it is moved.
#[derive(Debug, Clone, Copy)]
pub struct LogSettings {
    pub segment_size: u64,
    /// How long an event may wait in the log before it is moved; larger
    /// moves cost less per event.
    pub move_after: Duration,
    /// Events moved in one transaction at most.
    pub move_max: usize,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings { segment_size: 8 << 20, move_after: Duration::from_millis(5), move_max: 1024 }
    }
}

const HEADER: usize = 8;
/// `seq` and `enqueued_at`, then three u16 lengths.
const FIXED: usize = 8 + 8 + 3 * 2;
/// Appends folded into one write at most.
const GROUP_MAX: usize = 512;
/// After a failed move, wait before trying again rather than spin.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// An event read back from the log, with its sequence number.
type Logged = (u64, NewEvent);
/// An append waiting to be written, and how to answer it.
type Append = (NewEvent, oneshot::Sender<Result<(), String>>);

enum Message {
    Append(Append),
    /// A move finished: its outcome waits in the writer's `moved` channel.
    Wake,
}

/// Unmoved events the log holds at most before it stops answering appends
/// until a move catches up: memory follows this bound, not the accept rate.
const UNMOVED_MAX_BYTES: usize = 16 << 20;

pub struct AcceptLog {
    messages: mpsc::Sender<Message>,
    settings: LogSettings,
    /// Events acknowledged from the log and not yet in the SQLite queue.
    unmoved: Arc<AtomicI64>,
    path: PathBuf,
}

impl AcceptLog {
    /// Opens `dir/accept-log`, moves whatever a previous run left there into
    /// `store`, and starts the log's thread. After each move the thread wakes
    /// the moved events' functions in `wakeups`.
    pub async fn open(
        dir: &Path,
        store: Store,
        wakeups: HashMap<String, Arc<Notify>>,
        settings: LogSettings,
    ) -> Result<AcceptLog, StoreError> {
        let path = dir.join("accept-log");
        let error = |message: String| StoreError { path: path.display().to_string(), message };
        std::fs::create_dir_all(&path).map_err(|e| error(format!("cannot create the directory: {e}")))?;
        let moved = store.log_moved().await?;
        let (segments, recovered) = read_segments(&path, moved).map_err(&error)?;
        let last_seq = recovered.last().map_or(moved, |(seq, _)| *seq);
        let count = recovered.len();
        // Synced even when nothing is recovered: the moves of the last run
        // that were not synced become durable before their segments are
        // reused.
        store.move_recovered(recovered.into_iter().map(|(_, e)| e).collect(), last_seq).await?;
        if count > 0 {
            tracing::info!(events = count, "queued the events the accept log held from the last run");
        }
        let unmoved = Arc::new(AtomicI64::new(0));
        let (tx, rx) = mpsc::channel();
        let (moved_tx, moved_rx) = mpsc::channel();
        let writer = Writer {
            dir: path.clone(),
            settings,
            free: segments,
            used: VecDeque::new(),
            offset: 0,
            next_seq: last_seq + 1,
            moved: last_seq,
            durable: last_seq,
            want_durable: false,
            unmoved_events: VecDeque::new(),
            unmoved_bytes: 0,
            unmoved: unmoved.clone(),
            moving_seqs: Vec::new(),
            moving_durable: false,
            abandon: false,
            retry_at: None,
            store,
            wakeups,
            sync_seconds: metrics::histogram!("switchyard_accept_log_sync_seconds"),
            group_events: metrics::histogram!("switchyard_accept_log_group_events"),
            wake: tx.clone(),
            moved_tx,
            moved_rx,
            buffer: Vec::new(),
        };
        std::thread::Builder::new()
            .name("switchyard-log".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| error(format!("cannot start the accept log's thread: {e}")))?;
        Ok(AcceptLog { messages: tx, settings, unmoved, path })
    }

    /// Whether `event` fits in a segment (else it goes to the store directly).
    pub fn fits(&self, event: &NewEvent) -> bool {
        record_size(event) as u64 <= self.settings.segment_size
    }

    /// Appends `event`; resolves once it is durable.
    pub async fn append(&self, event: NewEvent) -> Result<(), StoreError> {
        let error = |message: String| StoreError { path: self.path.display().to_string(), message };
        let (tx, rx) = oneshot::channel();
        self.messages.send(Message::Append((event, tx))).map_err(|_| error("the log's thread has stopped".into()))?;
        rx.await.map_err(|_| error("the log's thread has stopped".into()))?.map_err(error)
    }

    /// Events acknowledged and not yet in the SQLite queue.
    pub fn unmoved(&self) -> i64 {
        self.unmoved.load(Ordering::Acquire)
    }
}

struct Segment {
    path: PathBuf,
    file: File,
    /// The last sequence number written in its current use (0: none).
    last_seq: u64,
}

struct Writer {
    dir: PathBuf,
    settings: LogSettings,
    /// Segments whose records have all been durably moved, ready for reuse.
    free: Vec<Segment>,
    /// Segments in use, oldest first; the last is written to.
    used: VecDeque<Segment>,
    /// Where the next write goes in the last used segment.
    offset: u64,
    next_seq: u64,
    /// Every record up to this sequence number is in the SQLite queue.
    moved: u64,
    /// ... and up to this one, durably so: segments holding only records up
    /// to it can be reused.
    durable: u64,
    /// The next move is to be synced (a segment was filled).
    want_durable: bool,
    /// Acknowledged events not yet moved: sequence number, event, when it
    /// was written.
    unmoved_events: VecDeque<(u64, NewEvent, Instant)>,
    unmoved_bytes: usize,
    unmoved: Arc<AtomicI64>,
    /// The sequence numbers of the events of the move that is with the
    /// store, in order; empty when none is. One move at a time, so `moved`
    /// only grows past events that were queued.
    moving_seqs: Vec<u64>,
    /// The move under way is synced.
    moving_durable: bool,
    /// The current segment had a failed write: the next goes elsewhere.
    abandon: bool,
    retry_at: Option<Instant>,
    store: Store,
    wakeups: HashMap<String, Arc<Notify>>,
    /// How long each `fdatasync` of a group took, and how many events each
    /// group held: what the accept's rate and latency come from.
    sync_seconds: metrics::Histogram,
    group_events: metrics::Histogram,
    /// Wakes the writer when a move finished.
    wake: mpsc::Sender<Message>,
    moved_tx: mpsc::Sender<Moved>,
    moved_rx: mpsc::Receiver<Moved>,
    buffer: Vec<u8>,
}

impl Writer {
    fn run(mut self, messages: mpsc::Receiver<Message>) {
        // The writer holds a sender of its own channel (to be woken after a
        // move), so the channel never reports disconnection: the thread ends
        // with the process. Events not moved by then are moved at the next
        // start.
        loop {
            while let Ok(moved) = self.moved_rx.try_recv() {
                self.moved(moved);
            }
            if self.unmoved_bytes >= UNMOVED_MAX_BYTES {
                // Appends wait in the channel (their callers wait for the
                // answer) until a move has made room.
                if !self.moving() {
                    if let Some(retry) = self.retry_at {
                        std::thread::sleep(retry.saturating_duration_since(Instant::now()));
                    }
                    self.retry_at = None;
                    self.start_move();
                }
                match self.moved_rx.recv() {
                    Ok(moved) => self.moved(moved),
                    Err(_) => return,
                }
                continue;
            }
            let message = match self.move_due() {
                Some(wait) => match messages.recv_timeout(wait) {
                    Ok(message) => message,
                    Err(RecvTimeoutError::Timeout) => {
                        self.start_move();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                },
                None => match messages.recv() {
                    Ok(message) => message,
                    Err(_) => return,
                },
            };
            let mut group = Vec::new();
            if let Message::Append(append) = message {
                group.push(append);
            }
            while group.len() < GROUP_MAX {
                match messages.try_recv() {
                    Ok(Message::Append(append)) => group.push(append),
                    Ok(Message::Wake) => {}
                    Err(_) => break,
                }
            }
            if !group.is_empty() {
                self.append(group);
            }
            if self.move_due() == Some(Duration::ZERO) {
                self.start_move();
            }
        }
    }

    /// How long until the next move should start; `None` when none is due.
    fn move_due(&self) -> Option<Duration> {
        let (_, _, oldest) = self.unmoved_events.front()?;
        if self.moving() {
            return None;
        }
        let now = Instant::now();
        let mut at = *oldest + self.settings.move_after;
        if self.unmoved_events.len() >= self.settings.move_max {
            at = now;
        }
        if let Some(retry) = self.retry_at {
            at = at.max(retry);
        }
        Some(at.saturating_duration_since(now))
    }

    fn start_move(&mut self) {
        if self.moving() || self.unmoved_events.is_empty() {
            return;
        }
        let n = self.unmoved_events.len().min(self.settings.move_max);
        let mut events = Vec::with_capacity(n);
        for (seq, event, _) in self.unmoved_events.drain(..n) {
            self.moving_seqs.push(seq);
            events.push(event);
        }
        let last_seq = *self.moving_seqs.last().expect("one event at least");
        self.moving_durable = self.want_durable;
        self.want_durable = false;
        let (moved_tx, wake) = (self.moved_tx.clone(), self.wake.clone());
        self.store.move_logged(events, last_seq, self.moving_durable, move |moved| {
            let _ = moved_tx.send(moved);
            let _ = wake.send(Message::Wake);
        });
    }

    fn moving(&self) -> bool {
        !self.moving_seqs.is_empty()
    }

    fn moved(&mut self, moved: Moved) {
        match moved.outcome {
            Ok(()) => {
                self.moving_seqs.clear();
                self.retry_at = None;
                self.moved = moved.last_seq;
                if self.moving_durable {
                    self.durable = moved.last_seq;
                }
                self.unmoved.fetch_sub(moved.events.len() as i64, Ordering::AcqRel);
                self.unmoved_bytes -= moved.events.iter().map(|e| e.payload.len()).sum::<usize>();
                let mut woken: Vec<&str> = Vec::new();
                for event in &moved.events {
                    if !woken.contains(&event.function.as_str()) {
                        woken.push(&event.function);
                        if let Some(n) = self.wakeups.get(&event.function) {
                            n.notify_one();
                        }
                    }
                }
            }
            Err(error) => {
                tracing::error!(%error, events = moved.events.len(), "cannot move accepted events into the queue; they stay in the accept log and are retried");
                self.retry_at = Some(Instant::now() + RETRY_PAUSE);
                self.want_durable |= self.moving_durable;
                let now = Instant::now();
                for (seq, event) in self.moving_seqs.drain(..).zip(moved.events).rev() {
                    self.unmoved_events.push_front((seq, event, now));
                }
            }
        }
    }

    /// Writes a group of appends, syncs, then answers each.
    fn append(&mut self, group: Vec<Append>) {
        let first_seq = self.next_seq;
        // Sequence numbers are never reused, even after a failed write: a
        // failed group's records may be in a segment, and must not be
        // mistaken for the next group's.
        self.next_seq += group.len() as u64;
        self.group_events.record(group.len() as f64);
        match self.write(&group, first_seq) {
            Ok(()) => {
                self.unmoved.fetch_add(group.len() as i64, Ordering::AcqRel);
                let now = Instant::now();
                for (i, (event, reply)) in group.into_iter().enumerate() {
                    let _ = reply.send(Ok(()));
                    self.unmoved_bytes += event.payload.len();
                    self.unmoved_events.push_back((first_seq + i as u64, event, now));
                }
            }
            Err(error) => {
                tracing::error!(%error, "cannot write to the accept log");
                // What this group left in the segment may be torn, and
                // reading a segment stops at a torn record: later groups go
                // to another segment. This one is kept until its records are
                // moved, since earlier groups' records are in it.
                if let Some(segment) = self.used.back_mut() {
                    segment.last_seq = self.next_seq - 1;
                }
                self.abandon = true;
                for (_, reply) in group {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    fn write(&mut self, group: &[Append], first_seq: u64) -> Result<(), String> {
        self.buffer.clear();
        for (i, (event, _)) in group.iter().enumerate() {
            let seq = first_seq + i as u64;
            let size = record_size(event) as u64;
            if self.abandon
                || self.used.is_empty()
                || self.offset + self.buffer.len() as u64 + size > self.settings.segment_size
            {
                // The group's records so far are made durable where they
                // are before the group goes on in the next segment.
                if !self.buffer.is_empty() {
                    self.flush(seq - 1)?;
                    self.sync()?;
                }
                self.rotate()?;
            }
            encode(&mut self.buffer, seq, event);
        }
        self.flush(first_seq + group.len() as u64 - 1)?;
        self.sync()
    }

    /// Writes the buffer, whose last record is `last_seq`, at the end of the
    /// current segment.
    fn flush(&mut self, last_seq: u64) -> Result<(), String> {
        let segment = self.used.back_mut().expect("a segment is in use");
        segment.last_seq = last_seq;
        segment
            .file
            .write_all_at(&self.buffer, self.offset)
            .map_err(|e| format!("{}: write: {e}", segment.path.display()))?;
        self.offset += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    fn sync(&self) -> Result<(), String> {
        let segment = self.used.back().expect("a segment is in use");
        let started = Instant::now();
        let synced = segment.file.sync_data().map_err(|e| format!("{}: sync: {e}", segment.path.display()));
        self.sync_seconds.record(started.elapsed());
        synced
    }

    /// Continues at the start of a segment that is free (all of it moved),
    /// or of a new one.
    fn rotate(&mut self) -> Result<(), String> {
        // The segment being left is full: sync the next move, so that its
        // records are durably queued by the time its space is wanted again.
        self.want_durable = true;
        while self.used.front().is_some_and(|s| s.last_seq <= self.durable) {
            let segment = self.used.pop_front().expect("front exists");
            self.free.push(segment);
        }
        let segment = match self.free.pop() {
            Some(segment) => segment,
            None => self.create()?,
        };
        self.used.push_back(Segment { last_seq: 0, ..segment });
        self.offset = 0;
        self.abandon = false;
        Ok(())
    }

    fn create(&mut self) -> Result<Segment, String> {
        let number =
            self.used.iter().chain(self.free.iter()).filter_map(|s| segment_number(&s.path)).max().map_or(1, |n| n + 1);
        let path = self.dir.join(format!("{number:010}.log"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| format!("{}: create: {e}", path.display()))?;
        match self.fill(&file, &path) {
            Ok(()) => Ok(Segment { path, file, last_seq: 0 }),
            Err(error) => {
                // Neither used nor free, a file left here would take this
                // number from every later attempt ("file exists"), even once
                // the disk has room again.
                let _ = std::fs::remove_file(&path);
                Err(error)
            }
        }
    }

    /// Zero-fills a new segment and makes it and its directory entry durable.
    fn fill(&self, file: &File, path: &Path) -> Result<(), String> {
        let zeros = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < self.settings.segment_size {
            let n = zeros.len().min((self.settings.segment_size - at) as usize);
            file.write_all_at(&zeros[..n], at).map_err(|e| format!("{}: write: {e}", path.display()))?;
            at += n as u64;
        }
        file.sync_all().map_err(|e| format!("{}: sync: {e}", path.display()))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| format!("{}: sync: {e}", self.dir.display()))
    }
}

fn segment_number(path: &Path) -> Option<u64> {
    path.file_name()?.to_str()?.strip_suffix(".log")?.parse().ok()
}

fn record_size(event: &NewEvent) -> usize {
    HEADER + FIXED + event.request_id.len() + event.function.len() + event.source.len() + event.payload.len()
}

fn encode(out: &mut Vec<u8>, seq: u64, event: &NewEvent) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&event.enqueued_at.to_le_bytes());
    for field in [&event.request_id, &event.function, &event.source] {
        out.extend_from_slice(&(field.len() as u16).to_le_bytes());
    }
    for field in [&event.request_id, &event.function, &event.source] {
        out.extend_from_slice(field.as_bytes());
    }
    out.extend_from_slice(&event.payload);
    let body = &out[start + HEADER..];
    let len = body.len() as u32;
    let crc = crc32fast::hash(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the record at the start of `bytes`: its length in all, its `seq`
/// and the event; `None` at the end of the records.
fn decode(bytes: &[u8]) -> Option<(usize, u64, NewEvent)> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let body = bytes.get(HEADER..HEADER + len)?;
    if len < FIXED || crc32fast::hash(body) != crc {
        return None;
    }
    let seq = u64::from_le_bytes(body[..8].try_into().ok()?);
    let enqueued_at = i64::from_le_bytes(body[8..16].try_into().ok()?);
    let lens: Vec<usize> = (0..3).map(|i| u16::from_le_bytes([body[16 + 2 * i], body[17 + 2 * i]]) as usize).collect();
    let mut at = FIXED;
    let mut fields = Vec::with_capacity(3);
    for n in lens {
        fields.push(String::from_utf8(body.get(at..at + n)?.to_vec()).ok()?);
        at += n;
    }
    let payload = Bytes::copy_from_slice(body.get(at..)?);
    let source = fields.pop()?;
    let function = fields.pop()?;
    let request_id = fields.pop()?;
    Some((HEADER + len, seq, NewEvent { request_id, function, source, payload, enqueued_at }))
}

/// Opens every segment in `dir` and returns them with the records after
/// `moved`, in sequence order.
fn read_segments(dir: &Path, moved: u64) -> Result<(Vec<Segment>, Vec<Logged>), String> {
    let mut segments = Vec::new();
    let mut records = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot list: {e}"))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("cannot list: {e}"))?.path();
        if segment_number(&path).is_none() {
            continue;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("{}: open: {e}", path.display()))?;
        let mut bytes = Vec::new();
        (&file).read_to_end(&mut bytes).map_err(|e| format!("{}: read: {e}", path.display()))?;
        let mut at = 0;
        let mut previous: Option<u64> = None;
        while let Some((size, seq, event)) = decode(&bytes[at..]) {
            if previous.is_some_and(|p| seq != p + 1) {
                break;
            }
            if seq > moved {
                records.push((seq, event));
            }
            previous = Some(seq);
            at += size;
        }
        segments.push(Segment { path, file, last_seq: 0 });
    }
    records.sort_by_key(|(seq, _)| *seq);
    segments.sort_by_key(|s| segment_number(&s.path));
    Ok((segments, records))
}

#[cfg(test)]
mod tests;
