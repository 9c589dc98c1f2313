//! The embedded state: one SQLite file holding the async invocation queue and
//! the dead-letter store.
//!
//! One thread owns the connection. Callers send it jobs; it runs every job
//! waiting at that moment inside one transaction and commits once (group
//! commit), and only after the commit, which with `synchronous=FULL` in WAL mode
//! means after fsync, does any caller hear back. So nothing a caller was told
//! is stored can be lost by a crash, and many concurrent jobs share one fsync.
//! The exceptions commit without a sync of their own: the accept log's moves
//! (queue/log.rs), whose events the log keeps until a later synced commit
//! covers them, and the claims and deletes of delivered events
//! ([`Commit::Unsynced`]), which a power loss could only undo into a second
//! delivery.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone, thiserror::Error)]
#[error("state store {path}: {message}")]
pub struct StoreError {
    pub path: String,
    pub message: String,
}

type Reply = Box<dyn FnOnce(Option<&str>) + Send>;
/// Runs inside the group transaction, or with `None` when the transaction could
/// not begin; either way it returns how to answer its caller after the commit.
type Job = Box<dyn FnOnce(Option<&Connection>) -> Reply + Send>;

/// Jobs folded into one transaction at most.
const GROUP_MAX: usize = 512;
/// Jobs waiting for the writer; senders wait beyond this (backpressure).
const QUEUE_MAX: usize = 4096;

#[derive(Clone)]
pub struct Store {
    /// Jobs, each with whether its commit must be synced before it hears
    /// back.
    jobs: mpsc::Sender<(Job, Commit)>,
    /// Claims ended and not yet removed from `temp.claimed`: the writer
    /// removes them before its next group, so before any later claim.
    released: Released,
    path: PathBuf,
}

type Released = std::sync::Arc<std::sync::Mutex<Vec<i64>>>;

/// Whether a job's commit is synced before the job hears back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Commit {
    Synced,
    /// For the accept log's moves (the log keeps their events until a synced
    /// commit covers them), and for jobs that only claim an event or delete
    /// one that was delivered. Their commit survives the process being
    /// killed (it is in the write-ahead log, which the operating system
    /// holds); only a power loss before the next synced commit could undo
    /// it, and undoing it costs a delivery made twice, never an event.
    Unsynced,
}

/// What an async event is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// To be invoked.
    Invoke,
    /// Invoked; its destination record is waiting to reach `on_success`.
    OnSuccess,
    /// Failed for good; its record is waiting to reach `on_failure`.
    OnFailure,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Invoke => "invoke",
            Phase::OnSuccess => "on_success",
            Phase::OnFailure => "on_failure",
        }
    }

    fn parse(s: &str) -> Phase {
        match s {
            "on_success" => Phase::OnSuccess,
            "on_failure" => Phase::OnFailure,
            _ => Phase::Invoke,
        }
    }
}

/// An event to queue.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub request_id: String,
    pub function: String,
    /// The mapping or API that accepted it.
    pub source: String,
    pub payload: Bytes,
    pub enqueued_at: i64,
}

/// A queued async event. Times are milliseconds since the epoch.
#[derive(Debug, Clone)]
pub struct QueuedEvent {
    pub id: i64,
    pub request_id: String,
    pub function: String,
    pub source: String,
    pub payload: Bytes,
    pub enqueued_at: i64,
    pub due_at: i64,
    /// Function errors so far (what `max_retry_attempts` counts).
    pub attempts: u32,
    /// Invocations made (Lambda's approximateInvokeCount).
    pub invokes: u32,
    /// Throttles and unreachable tries in a row (for the backoff only).
    pub throttles: u32,
    pub phase: Phase,
    pub destination_record: Option<Bytes>,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub first_attempt_at: Option<i64>,
    pub last_attempt_at: Option<i64>,
}

/// An entry of the dead-letter store.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub id: i64,
    pub request_id: String,
    pub function: String,
    pub source: String,
    pub payload: Bytes,
    pub condition: String,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub attempts: u32,
    pub enqueued_at: i64,
    pub first_attempt_at: Option<i64>,
    pub last_attempt_at: Option<i64>,
    pub failed_at: i64,
    /// Lambda's destination record for this failure.
    pub record: Option<Bytes>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS async_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    function TEXT NOT NULL,
    source TEXT NOT NULL,
    payload BLOB NOT NULL,
    enqueued_at INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    invokes INTEGER NOT NULL DEFAULT 0,
    throttles INTEGER NOT NULL DEFAULT 0,
    phase TEXT NOT NULL DEFAULT 'invoke',
    destination_record BLOB,
    error_type TEXT,
    error_message TEXT,
    first_attempt_at INTEGER,
    last_attempt_at INTEGER
);
CREATE INDEX IF NOT EXISTS async_events_due ON async_events (function, due_at);
-- The queue gauges' oldest event per function: one seek, however deep the
-- queue.
CREATE INDEX IF NOT EXISTS async_events_age ON async_events (function, enqueued_at);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    function TEXT NOT NULL,
    source TEXT NOT NULL,
    payload BLOB NOT NULL,
    condition TEXT NOT NULL,
    error_type TEXT,
    error_message TEXT,
    attempts INTEGER NOT NULL,
    enqueued_at INTEGER NOT NULL,
    first_attempt_at INTEGER,
    last_attempt_at INTEGER,
    failed_at INTEGER NOT NULL,
    record BLOB
);
CREATE INDEX IF NOT EXISTS dead_letters_function ON dead_letters (function, id);
-- How far the accept log (queue/log.rs) has been moved into async_events:
-- the last sequence number moved, written in the same transaction as the
-- events it covers.
CREATE TABLE IF NOT EXISTS accept_log (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    moved_seq INTEGER NOT NULL
);
-- Events per function in async_events and in dead_letters, changed in the
-- transaction that changes those tables: the gauges read these instead of
-- counting a queue that may hold millions of events.
CREATE TABLE IF NOT EXISTS queue_counts (
    function TEXT PRIMARY KEY,
    events INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letter_counts (
    function TEXT PRIMARY KEY,
    entries INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    mapping TEXT NOT NULL,
    scope TEXT NOT NULL,
    position TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (mapping, scope)
);
";

/// Fills the counts tables from the tables they count.
const FILL_COUNTS: &str = "
DELETE FROM queue_counts;
INSERT INTO queue_counts (function, events) SELECT function, COUNT(*) FROM async_events GROUP BY function;
DELETE FROM dead_letter_counts;
INSERT INTO dead_letter_counts (function, entries) SELECT function, COUNT(*) FROM dead_letters GROUP BY function;
";

const EVENT_COLUMNS: &str = "id, request_id, function, source, payload, enqueued_at, due_at, attempts, invokes, \
     throttles, phase, destination_record, error_type, error_message, first_attempt_at, last_attempt_at";

const DEAD_LETTER_COLUMNS: &str = "id, request_id, function, source, payload, condition, error_type, error_message, \
     attempts, enqueued_at, first_attempt_at, last_attempt_at, failed_at, record";

impl Store {
    /// Opens (creating) `dir/switchyard.db` and starts its writer thread.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join("switchyard.db");
        let error = |message: String| StoreError { path: path.display().to_string(), message };
        std::fs::create_dir_all(dir).map_err(|e| error(format!("cannot create {}: {e}", dir.display())))?;
        let conn = Connection::open(&path).map_err(|e| error(e.to_string()))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| error(e.to_string()))?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(|e| error(e.to_string()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(|e| error(e.to_string()))?;
        conn.execute_batch(SCHEMA).map_err(|e| error(e.to_string()))?;
        // Events handed to a worker and not yet released. A temp table lives
        // with this connection only: after a crash nothing is claimed, so
        // every queued event is delivered again.
        conn.execute_batch("CREATE TEMP TABLE IF NOT EXISTS claimed (id INTEGER PRIMARY KEY)")
            .map_err(|e| error(e.to_string()))?;
        let (tx, rx) = mpsc::channel(QUEUE_MAX);
        let released = Released::default();
        let pending = released.clone();
        std::thread::Builder::new()
            .name("switchyard-store".into())
            .spawn(move || writer(conn, rx, pending))
            .map_err(|e| error(format!("cannot start the writer thread: {e}")))?;
        Ok(Store { jobs: tx, released, path })
    }

    /// Runs `f` inside the next group transaction, in a savepoint of its own;
    /// resolves after the commit.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.run(f, true, Commit::Synced).await
    }

    /// As [`Store::call`], for a job of one statement, which SQLite already
    /// applies whole or not at all: no savepoint needed.
    async fn call_one<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.run(f, false, Commit::Synced).await
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
        savepoint: bool,
        commit: Commit,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let path = self.path.display().to_string();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Some(conn) if savepoint => in_savepoint(conn, f).map_err(|e| e.to_string()),
                Some(conn) => f(conn).map_err(|e| e.to_string()),
                None => Err("cannot begin a transaction".to_string()),
            };
            Box::new(move |commit_error: Option<&str>| {
                let result = match (result, commit_error) {
                    (Ok(v), None) => Ok(v),
                    (Err(e), _) => Err(e),
                    (_, Some(e)) => Err(format!("commit failed: {e}")),
                };
                let _ = tx.send(result);
            })
        });
        let closed = || StoreError { path: path.clone(), message: "the writer thread has stopped".into() };
        self.jobs.send((job, commit)).await.map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?.map_err(|message| StoreError { path: path.clone(), message })
    }

    /// The last accept-log sequence number moved into the queue (0: none).
    pub async fn log_moved(&self) -> Result<u64, StoreError> {
        self.call_one(|c| {
            c.query_row("SELECT moved_seq FROM accept_log WHERE id = 0", [], |r| r.get::<_, i64>(0))
                .optional()
                .map(|seq| seq.unwrap_or(0) as u64)
        })
        .await
    }

    /// Queues events taken from the accept log and records `last_seq` as
    /// moved, in one transaction; `done` hears the outcome after the commit
    /// and gets the events back either way. Unless `durable`, the commit is
    /// not synced: it becomes durable with the next synced commit, which
    /// the log asks for before it reuses the space of moved events. Does not
    /// wait, and must not be called from the runtime: the accept log's
    /// thread calls it.
    pub fn move_logged(
        &self,
        events: Vec<NewEvent>,
        last_seq: u64,
        durable: bool,
        done: impl FnOnce(Moved) + Send + 'static,
    ) {
        let job = move_job(events, last_seq, done);
        let commit = if durable { Commit::Synced } else { Commit::Unsynced };
        if let Err(mpsc::error::SendError((job, _))) = self.jobs.blocking_send((job, commit)) {
            // The writer thread has stopped: answer as a failed commit would.
            job(None)(Some("the writer thread has stopped"));
        }
    }

    /// As [`Store::move_logged`], synced and awaited (recovery at start).
    pub async fn move_recovered(&self, events: Vec<NewEvent>, last_seq: u64) -> Result<(), StoreError> {
        self.call(move |c| insert_moved(c, &events, last_seq)).await
    }

    pub async fn enqueue(&self, event: NewEvent) -> Result<i64, StoreError> {
        self.call(move |c| insert_event(c, &event)).await
    }

    /// Claims up to `limit` events of `function` due at `now`, oldest due
    /// first, skipping those already claimed. A claim is released by
    /// [`Store::release`]; it is not durable.
    pub async fn claim(&self, function: &str, now: i64, limit: usize) -> Result<Vec<QueuedEvent>, StoreError> {
        let function = function.to_string();
        let claim = move |c: &Connection| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM async_events WHERE function = ?1 AND due_at <= ?2 \
                 AND id NOT IN (SELECT id FROM temp.claimed) ORDER BY due_at, id LIMIT ?3"
            ))?;
            let events: Vec<QueuedEvent> =
                stmt.query_map(params![function, now, limit as i64], event_row)?.collect::<Result<_, _>>()?;
            let mut claim = c.prepare_cached("INSERT OR IGNORE INTO temp.claimed (id) VALUES (?1)")?;
            for e in &events {
                claim.execute([e.id])?;
            }
            Ok(events)
        };
        self.run(claim, true, Commit::Unsynced).await
    }

    /// Ends the claim on an event (whatever became of it).
    /// Not a job of its own: the writer ends the claim before its next
    /// group, outside any group's transaction, so a failed commit cannot
    /// leave the event claimed.
    pub fn release(&self, id: i64) {
        self.released.lock().unwrap_or_else(|e| e.into_inner()).push(id);
    }

    /// The earliest `due_at` of `function`'s unclaimed events.
    pub async fn next_due(&self, function: &str) -> Result<Option<i64>, StoreError> {
        let function = function.to_string();
        self.call(move |c| {
            c.query_row(
                "SELECT due_at FROM async_events WHERE function = ?1 AND id NOT IN (SELECT id FROM temp.claimed) \
                 ORDER BY due_at, id LIMIT 1",
                [function],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }

    /// Deletes a delivered event. No savepoint, although these are two
    /// statements (the row and its count): the count's upsert has no
    /// constraint to break, so it fails only with the whole transaction, and
    /// the counts are recounted at each start in any case.
    pub async fn delete(&self, id: i64) -> Result<(), StoreError> {
        self.run(move |c| delete_event(c, id), false, Commit::Unsynced).await
    }

    /// Writes back an event's retry state.
    pub async fn update(&self, event: QueuedEvent) -> Result<(), StoreError> {
        self.call_one(move |c| {
            c.prepare_cached(
                "UPDATE async_events SET due_at = ?2, attempts = ?3, invokes = ?4, throttles = ?5, phase = ?6, \
                 destination_record = ?7, error_type = ?8, error_message = ?9, first_attempt_at = ?10, \
                 last_attempt_at = ?11 WHERE id = ?1",
            )?
            .execute(params![
                event.id,
                event.due_at,
                event.attempts,
                event.invokes,
                event.throttles,
                event.phase.as_str(),
                event.destination_record.as_deref(),
                event.error_type,
                event.error_message,
                event.first_attempt_at,
                event.last_attempt_at,
            ])
            .map(|_| ())
        })
        .await
    }

    /// Adds a dead letter; with `queued_id`, moves that queued event there in
    /// the same transaction.
    pub async fn dead_letter(&self, queued_id: Option<i64>, entry: DeadLetter) -> Result<i64, StoreError> {
        self.call(move |c| {
            if let Some(id) = queued_id {
                delete_event(c, id)?;
            }
            c.prepare_cached(&format!(
                "INSERT INTO dead_letters ({DEAD_LETTER_COLUMNS}) VALUES (NULL, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ))?
            .execute(params![
                entry.request_id,
                entry.function,
                entry.source,
                &entry.payload[..],
                entry.condition,
                entry.error_type,
                entry.error_message,
                entry.attempts,
                entry.enqueued_at,
                entry.first_attempt_at,
                entry.last_attempt_at,
                entry.failed_at,
                entry.record.as_deref(),
            ])?;
            let id = c.last_insert_rowid();
            count_dead_letters(c, &entry.function, 1)?;
            Ok(id)
        })
        .await
    }

    /// Replaces a queued event by a new one (a `function` destination) in one
    /// transaction.
    pub async fn forward(&self, queued_id: i64, next: NewEvent) -> Result<i64, StoreError> {
        self.call(move |c| {
            delete_event(c, queued_id)?;
            insert_event(c, &next)
        })
        .await
    }

    /// Where a mapping's ordered scope (a Kinesis shard) was read up to.
    pub async fn checkpoint(&self, mapping: &str, scope: &str) -> Result<Option<String>, StoreError> {
        let (mapping, scope) = (mapping.to_string(), scope.to_string());
        self.call_one(move |c| {
            c.query_row(
                "SELECT position FROM checkpoints WHERE mapping = ?1 AND scope = ?2",
                params![mapping, scope],
                |row| row.get(0),
            )
            .optional()
        })
        .await
    }

    /// Records a scope's checkpoint; resolves once it is durable.
    pub async fn save_checkpoint(&self, mapping: &str, scope: &str, position: &str) -> Result<(), StoreError> {
        let (mapping, scope, position) = (mapping.to_string(), scope.to_string(), position.to_string());
        self.call_one(move |c| {
            c.execute(
                "INSERT INTO checkpoints (mapping, scope, position, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (mapping, scope) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
                params![mapping, scope, position, now_ms()],
            )
            .map(|_| ())
        })
        .await
    }

    /// Counts the queue and the dead-letter store afresh into the counts
    /// tables, which every change keeps from then on. The server does this
    /// once as it starts (one pass over two indexes), so a store written
    /// before the counts were kept, or by an older Switchyard, is counted
    /// right from the first refresh.
    pub async fn recount(&self) -> Result<(), StoreError> {
        self.call(|c| c.execute_batch(FILL_COUNTS)).await
    }

    /// Per function with events queued: how many, and the oldest
    /// `enqueued_at`. The count is kept, not counted, and the oldest is one
    /// seek in `async_events_age`: this costs the same for a queue of ten
    /// events or ten million.
    pub async fn depths(&self) -> Result<Vec<(String, u64, i64)>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT function, events, \
                 (SELECT MIN(enqueued_at) FROM async_events e WHERE e.function = q.function) \
                 FROM queue_counts q WHERE events > 0",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?)))?;
            rows.collect()
        })
        .await
    }

    /// Per function: dead-letter entries (kept, not counted).
    pub async fn dead_letter_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare_cached("SELECT function, entries FROM dead_letter_counts WHERE entries > 0")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
            rows.collect()
        })
        .await
    }

    /// Up to `limit` dead letters with an id above `after` (0: from the
    /// first), oldest first: a page of the store, the next one starting
    /// after its last id.
    pub async fn dlq_list(
        &self,
        function: Option<String>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE (?1 IS NULL OR function = ?1) AND id > ?3 \
                 ORDER BY id LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![function, limit as i64, after], dead_letter_row)?;
            rows.collect()
        })
        .await
    }

    pub async fn dlq_get(&self, id: i64) -> Result<Option<DeadLetter>, StoreError> {
        self.call(move |c| {
            c.query_row(&format!("SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE id = ?1"), [id], dead_letter_row)
                .optional()
        })
        .await
    }

    /// Re-queues the selected dead letters whose function is one of
    /// `functions` (the config's). Each entry is removed in the same
    /// transaction that queues its new attempt. Entries of any other function
    /// stay, and come back in [`Replayed::unknown`]: queued, they would wait
    /// for a dispatcher that does not exist.
    pub async fn dlq_replay(
        &self,
        selection: Selection,
        functions: Vec<String>,
        now: i64,
    ) -> Result<Replayed, StoreError> {
        self.call(move |c| {
            let mut replayed = Replayed::default();
            for id in selection.ids(c)? {
                let function: String = c
                    .prepare_cached("SELECT function FROM dead_letters WHERE id = ?1")?
                    .query_row([id], |r| r.get(0))?;
                if !functions.contains(&function) {
                    replayed.unknown.push((id, function));
                    continue;
                }
                c.execute(
                    "INSERT INTO async_events (request_id, function, source, payload, enqueued_at, due_at) \
                     SELECT request_id, function, source, payload, ?2, ?2 FROM dead_letters WHERE id = ?1",
                    params![id, now],
                )?;
                delete_dead_letter(c, id)?;
                count_queued(c, &function, 1)?;
                replayed.ids.push(id);
            }
            Ok(replayed)
        })
        .await
    }

    /// Moves the queued events of every function not in `functions` (the
    /// config's) to the dead-letter store, as `FunctionNotFound`, in one
    /// transaction; returns how many per function. Nothing would deliver
    /// them, and they would hold their place under `max_queued_events` for
    /// good. From the dead-letter store they can be replayed once the
    /// function is back, or purged.
    pub async fn dead_letter_unconfigured(
        &self,
        functions: Vec<String>,
        now: i64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        self.call(move |c| {
            let known =
                serde_json::to_string(&functions).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
            let unconfigured: Vec<(String, u64)> = c
                .prepare(
                    "SELECT function, COUNT(*) FROM async_events \
                     WHERE function NOT IN (SELECT value FROM json_each(?1)) GROUP BY function ORDER BY function",
                )?
                .query_map([&known], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
                .collect::<Result<_, _>>()?;
            if unconfigured.is_empty() {
                return Ok(unconfigured);
            }
            c.execute(
                &format!(
                    "INSERT INTO dead_letters ({DEAD_LETTER_COLUMNS}) \
                     SELECT NULL, request_id, function, source, payload, 'FunctionNotFound', \
                     'ResourceNotFoundException', 'Function not found: ' || function || ' (not in the config)', \
                     attempts, enqueued_at, first_attempt_at, last_attempt_at, ?2, destination_record \
                     FROM async_events WHERE function NOT IN (SELECT value FROM json_each(?1)) ORDER BY id"
                ),
                params![known, now],
            )?;
            c.execute("DELETE FROM async_events WHERE function NOT IN (SELECT value FROM json_each(?1))", [&known])?;
            c.execute_batch(FILL_COUNTS)?;
            Ok(unconfigured)
        })
        .await
    }

    pub async fn dlq_purge(&self, selection: Selection) -> Result<Vec<i64>, StoreError> {
        self.call(move |c| {
            let ids = selection.ids(c)?;
            for id in &ids {
                delete_dead_letter(c, *id)?;
            }
            Ok(ids)
        })
        .await
    }
}

/// What a replay did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// The entries queued again.
    pub ids: Vec<i64>,
    /// The entries left where they are, with their function, which the
    /// config does not have.
    pub unknown: Vec<(i64, String)>,
}

/// Which dead letters a replay or purge takes.
#[derive(Debug, Clone)]
pub enum Selection {
    Ids(Vec<i64>),
    /// Every entry, or every entry of one function.
    All {
        function: Option<String>,
    },
}

impl Selection {
    fn ids(&self, c: &Connection) -> rusqlite::Result<Vec<i64>> {
        match self {
            Selection::Ids(ids) => {
                let mut found = Vec::new();
                for id in ids {
                    let exists: Option<i64> =
                        c.query_row("SELECT id FROM dead_letters WHERE id = ?1", [id], |r| r.get(0)).optional()?;
                    found.extend(exists);
                }
                Ok(found)
            }
            Selection::All { function } => {
                let mut stmt =
                    c.prepare_cached("SELECT id FROM dead_letters WHERE ?1 IS NULL OR function = ?1 ORDER BY id")?;
                let rows = stmt.query_map([function], |r| r.get(0))?;
                rows.collect()
            }
        }
    }
}

fn insert_event(c: &Connection, e: &NewEvent) -> rusqlite::Result<i64> {
    let id = insert_row(c, e)?;
    count_queued(c, &e.function, 1)?;
    Ok(id)
}

/// Inserts the event's row only: the caller counts it.
fn insert_row(c: &Connection, e: &NewEvent) -> rusqlite::Result<i64> {
    c.prepare_cached(
        "INSERT INTO async_events (request_id, function, source, payload, enqueued_at, due_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
    )?
    .execute(params![e.request_id, e.function, e.source, &e.payload[..], e.enqueued_at])?;
    Ok(c.last_insert_rowid())
}

/// Removes a queued event, if it is still there, and counts it out.
fn delete_event(c: &Connection, id: i64) -> rusqlite::Result<()> {
    let function: Option<String> = c
        .prepare_cached("DELETE FROM async_events WHERE id = ?1 RETURNING function")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    match function {
        Some(function) => count_queued(c, &function, -1),
        None => Ok(()),
    }
}

/// Removes a dead letter, if it is still there, and counts it out; returns
/// its function.
fn delete_dead_letter(c: &Connection, id: i64) -> rusqlite::Result<Option<String>> {
    let function: Option<String> = c
        .prepare_cached("DELETE FROM dead_letters WHERE id = ?1 RETURNING function")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    if let Some(function) = &function {
        count_dead_letters(c, function, -1)?;
    }
    Ok(function)
}

fn count_queued(c: &Connection, function: &str, delta: i64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO queue_counts (function, events) VALUES (?1, ?2) \
         ON CONFLICT (function) DO UPDATE SET events = events + excluded.events",
    )?
    .execute(params![function, delta])
    .map(|_| ())
}

fn count_dead_letters(c: &Connection, function: &str, delta: i64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO dead_letter_counts (function, entries) VALUES (?1, ?2) \
         ON CONFLICT (function) DO UPDATE SET entries = entries + excluded.entries",
    )?
    .execute(params![function, delta])
    .map(|_| ())
}

/// What became of a move from the accept log.
pub struct Moved {
    pub events: Vec<NewEvent>,
    pub last_seq: u64,
    /// `Err` with why, when the events were not queued.
    pub outcome: Result<(), String>,
}

/// Queues `events` and records `last_seq` as the accept log's moved point.
fn insert_moved(c: &Connection, events: &[NewEvent], last_seq: u64) -> rusqlite::Result<()> {
    // One count per function and move, not per event.
    let mut counts: Vec<(&str, i64)> = Vec::new();
    for event in events {
        insert_row(c, event)?;
        match counts.iter_mut().find(|(f, _)| *f == event.function) {
            Some((_, n)) => *n += 1,
            None => counts.push((&event.function, 1)),
        }
    }
    for (function, n) in counts {
        count_queued(c, function, n)?;
    }
    c.prepare_cached(
        "INSERT INTO accept_log (id, moved_seq) VALUES (0, ?1) \
         ON CONFLICT (id) DO UPDATE SET moved_seq = excluded.moved_seq",
    )?
    .execute([last_seq as i64])
    .map(|_| ())
}

/// [`Store::move_logged`]'s job: unlike [`Store::call`]'s, it hands the
/// events back to the log whatever the outcome, so a failed move loses none.
fn move_job(events: Vec<NewEvent>, last_seq: u64, done: impl FnOnce(Moved) + Send + 'static) -> Job {
    Box::new(move |conn| {
        let inserted = match conn {
            Some(conn) => in_savepoint(conn, |c| insert_moved(c, &events, last_seq)).map_err(|e| e.to_string()),
            None => Err("cannot begin a transaction".to_string()),
        };
        Box::new(move |commit_error: Option<&str>| {
            let outcome = match (inserted, commit_error) {
                (Ok(()), None) => Ok(()),
                (Err(e), _) => Err(e),
                (_, Some(e)) => Err(format!("commit failed: {e}")),
            };
            done(Moved { events, last_seq, outcome })
        })
    })
}

fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<QueuedEvent> {
    Ok(QueuedEvent {
        id: r.get(0)?,
        request_id: r.get(1)?,
        function: r.get(2)?,
        source: r.get(3)?,
        payload: Bytes::from(r.get::<_, Vec<u8>>(4)?),
        enqueued_at: r.get(5)?,
        due_at: r.get(6)?,
        attempts: r.get(7)?,
        invokes: r.get(8)?,
        throttles: r.get(9)?,
        phase: Phase::parse(&r.get::<_, String>(10)?),
        destination_record: r.get::<_, Option<Vec<u8>>>(11)?.map(Bytes::from),
        error_type: r.get(12)?,
        error_message: r.get(13)?,
        first_attempt_at: r.get(14)?,
        last_attempt_at: r.get(15)?,
    })
}

fn dead_letter_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeadLetter> {
    Ok(DeadLetter {
        id: r.get(0)?,
        request_id: r.get(1)?,
        function: r.get(2)?,
        source: r.get(3)?,
        payload: Bytes::from(r.get::<_, Vec<u8>>(4)?),
        condition: r.get(5)?,
        error_type: r.get(6)?,
        error_message: r.get(7)?,
        attempts: r.get(8)?,
        enqueued_at: r.get(9)?,
        first_attempt_at: r.get(10)?,
        last_attempt_at: r.get(11)?,
        failed_at: r.get(12)?,
        record: r.get::<_, Option<Vec<u8>>>(13)?.map(Bytes::from),
    })
}

/// Each job runs in its own savepoint, so a failing job leaves no half-done
/// writes in the group and does not fail its neighbours.
fn in_savepoint<T>(conn: &Connection, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    match f(conn) {
        Ok(v) => {
            conn.prepare_cached("RELEASE job")?.execute([])?;
            Ok(v)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            Err(e)
        }
    }
}

fn writer(conn: Connection, mut jobs: mpsc::Receiver<(Job, Commit)>, released: Released) {
    let mut synced = true;
    while let Some((first, commit)) = jobs.blocking_recv() {
        end_claims(&conn, &released);
        let mut group = vec![first];
        let mut sync = commit == Commit::Synced;
        while group.len() < GROUP_MAX {
            match jobs.try_recv() {
                Ok((job, commit)) => {
                    group.push(job);
                    sync |= commit == Commit::Synced;
                }
                Err(_) => break,
            }
        }
        // A synced commit also makes every unsynced one before it durable:
        // the write-ahead log is one file, synced whole.
        let begun = if sync == synced {
            Ok(())
        } else {
            conn.pragma_update(None, "synchronous", if sync { "FULL" } else { "NORMAL" }).map(|()| synced = sync)
        }
        .and_then(|()| conn.prepare_cached("BEGIN IMMEDIATE").and_then(|mut s| s.execute([])).map(|_| ()));
        if let Err(error) = begun {
            tracing::error!(%error, "state store cannot begin a transaction");
            let replies: Vec<Reply> = group.into_iter().map(|job| job(None)).collect();
            let message = error.to_string();
            replies.into_iter().for_each(|reply| reply(Some(&message)));
            continue;
        }
        let replies: Vec<Reply> = group.into_iter().map(|job| job(Some(&conn))).collect();
        let commit = conn.prepare_cached("COMMIT").and_then(|mut s| s.execute([])).err().map(|e| e.to_string());
        if commit.is_some() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for reply in replies {
            reply(commit.as_deref());
        }
    }
}

/// Removes the released claims from `temp.claimed`, each in a transaction of
/// the temp database only (no sync); any that fail stay pending.
fn end_claims(conn: &Connection, released: &Released) {
    let ids = std::mem::take(&mut *released.lock().unwrap_or_else(|e| e.into_inner()));
    if ids.is_empty() {
        return;
    }
    let failed: Vec<i64> = match conn.prepare_cached("DELETE FROM temp.claimed WHERE id = ?1") {
        Ok(mut stmt) => ids.into_iter().filter(|id| stmt.execute([id]).is_err()).collect(),
        Err(_) => ids,
    };
    if !failed.is_empty() {
        tracing::error!(claims = failed.len(), "cannot end claims on async events; trying again before the next group");
        released.lock().unwrap_or_else(|e| e.into_inner()).extend(failed);
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(function: &str, at: i64) -> NewEvent {
        NewEvent {
            request_id: format!("r-{at}"),
            function: function.into(),
            source: "test".into(),
            payload: Bytes::from_static(b"{}"),
            enqueued_at: at,
        }
    }

    #[tokio::test]
    async fn queue_round_trip_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.enqueue(event("f", 10)).await.unwrap();
        store.enqueue(event("f", 20)).await.unwrap();
        store.enqueue(event("g", 5)).await.unwrap();
        let due = store.claim("f", 15, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].id, a);
        assert!(store.claim("f", 15, 10).await.unwrap().is_empty(), "a claimed event is not handed out twice");
        assert_eq!(store.next_due("f").await.unwrap(), Some(20));
        let mut e = due[0].clone();
        e.attempts = 1;
        e.due_at = 100;
        store.update(e).await.unwrap();
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.claim("f", 99, 10).await.unwrap().len(),
            1,
            "claims end with the process; only the event due at 20"
        );
        let store = Store::open(dir.path()).unwrap();
        let both = store.claim("f", 100, 10).await.unwrap();
        assert_eq!(both.len(), 2);
        assert_eq!(both[1].attempts, 1);
        let depths = store.depths().await.unwrap();
        assert!(depths.contains(&("f".to_string(), 2, 10)), "{depths:?}");
    }

    #[tokio::test]
    async fn dead_letter_and_replay_move_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store.enqueue(event("f", 10)).await.unwrap();
        let dl = store
            .dead_letter(
                Some(id),
                DeadLetter {
                    id: 0,
                    request_id: "r-10".into(),
                    function: "f".into(),
                    source: "test".into(),
                    payload: Bytes::from_static(b"{}"),
                    condition: "RetriesExhausted".into(),
                    error_type: Some("HttpError".into()),
                    error_message: Some("boom".into()),
                    attempts: 3,
                    enqueued_at: 10,
                    first_attempt_at: Some(11),
                    last_attempt_at: Some(12),
                    failed_at: 13,
                    record: None,
                },
            )
            .await
            .unwrap();
        assert!(store.claim("f", i64::MAX, 10).await.unwrap().is_empty());
        let listed = store.dlq_list(Some("f".into()), 0, 10).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(store.dlq_list(Some("f".into()), dl, 10).await.unwrap().is_empty(), "a page after the last");
        assert_eq!(store.dlq_list(None, dl - 1, 10).await.unwrap()[0].id, dl);
        assert_eq!(listed[0].error_message.as_deref(), Some("boom"));
        let replayed = store.dlq_replay(Selection::Ids(vec![dl, 999]), vec!["f".into()], 50).await.unwrap();
        assert_eq!(replayed, Replayed { ids: vec![dl], unknown: vec![] });
        assert!(store.dlq_get(dl).await.unwrap().is_none());
        let requeued = store.claim("f", 50, 10).await.unwrap();
        assert_eq!(requeued.len(), 1);
        assert_eq!(requeued[0].request_id, "r-10", "replay keeps the request id");
        assert_eq!(requeued[0].attempts, 0);
    }

    #[tokio::test]
    async fn events_of_a_function_gone_from_the_config_are_dead_lettered_and_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.enqueue(event("kept", 10)).await.unwrap();
        let gone = store.enqueue(event("gone", 20)).await.unwrap();
        store.enqueue(event("gone", 30)).await.unwrap();
        let mut tried = store.claim("gone", 20, 1).await.unwrap().remove(0);
        assert_eq!(tried.id, gone);
        tried.attempts = 1;
        tried.first_attempt_at = Some(21);
        store.update(tried).await.unwrap();
        store.release(gone);

        let swept = store.dead_letter_unconfigured(vec!["kept".into()], 99).await.unwrap();
        assert_eq!(swept, vec![("gone".to_string(), 2)]);
        assert_eq!(store.depths().await.unwrap(), vec![("kept".to_string(), 1, 10)]);
        assert_eq!(store.dead_letter_counts().await.unwrap(), vec![("gone".to_string(), 2)]);
        let letters = store.dlq_list(Some("gone".into()), 0, 10).await.unwrap();
        assert_eq!(letters.len(), 2);
        assert_eq!(letters[0].condition, "FunctionNotFound");
        assert_eq!(letters[0].error_type.as_deref(), Some("ResourceNotFoundException"));
        assert_eq!(letters[0].error_message.as_deref(), Some("Function not found: gone (not in the config)"));
        assert_eq!((letters[0].attempts, letters[0].first_attempt_at, letters[0].failed_at), (1, Some(21), 99));
        assert_eq!(letters[1].enqueued_at, 30);
        // Nothing more to move the second time.
        assert!(store.dead_letter_unconfigured(vec!["kept".into()], 100).await.unwrap().is_empty());

        let ids: Vec<i64> = letters.iter().map(|l| l.id).collect();
        let replayed = store.dlq_replay(Selection::Ids(ids.clone()), vec!["kept".into()], 110).await.unwrap();
        assert_eq!(replayed.ids, Vec::<i64>::new());
        assert_eq!(replayed.unknown, ids.iter().map(|id| (*id, "gone".to_string())).collect::<Vec<_>>());
        assert_eq!(store.dlq_list(Some("gone".into()), 0, 10).await.unwrap().len(), 2, "entries stay");
        // Once the function is back, the same replay queues them.
        let replayed = store.dlq_replay(Selection::All { function: None }, vec!["kept".into(), "gone".into()], 120);
        assert_eq!(replayed.await.unwrap().ids, ids);
        assert_eq!(store.claim("gone", 120, 10).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn counts_follow_every_way_in_and_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.enqueue(event("f", 10)).await.unwrap();
        let b = store.enqueue(event("f", 20)).await.unwrap();
        store.enqueue(event("g", 5)).await.unwrap();
        store.move_recovered(vec![event("f", 30), event("g", 40), event("f", 50)], 3).await.unwrap();
        let mut depths = store.depths().await.unwrap();
        depths.sort();
        assert_eq!(depths, vec![("f".to_string(), 4, 10), ("g".to_string(), 2, 5)]);

        store.delete(a).await.unwrap();
        store.delete(a).await.unwrap();
        let letter = |request_id: &str| DeadLetter {
            id: 0,
            request_id: request_id.into(),
            function: "f".into(),
            source: "test".into(),
            payload: Bytes::from_static(b"{}"),
            condition: "RetriesExhausted".into(),
            error_type: None,
            error_message: None,
            attempts: 3,
            enqueued_at: 20,
            first_attempt_at: None,
            last_attempt_at: None,
            failed_at: 21,
            record: None,
        };
        let dl = store.dead_letter(Some(b), letter("r-20")).await.unwrap();
        store.dead_letter(None, letter("r-x")).await.unwrap();
        store.forward(store.claim("g", 5, 1).await.unwrap()[0].id, event("h", 60)).await.unwrap();
        let mut depths = store.depths().await.unwrap();
        depths.sort();
        assert_eq!(depths, vec![("f".to_string(), 2, 30), ("g".to_string(), 1, 40), ("h".to_string(), 1, 60)]);
        assert_eq!(store.dead_letter_counts().await.unwrap(), vec![("f".to_string(), 2)]);

        store.dlq_replay(Selection::Ids(vec![dl]), vec!["f".into()], 70).await.unwrap();
        assert!(store.depths().await.unwrap().contains(&("f".to_string(), 3, 30)));
        store.dlq_purge(Selection::All { function: None }).await.unwrap();
        assert!(store.dead_letter_counts().await.unwrap().is_empty());
        drop(store);

        // Counts gone astray (a store written before they were kept, or by
        // an older Switchyard) are right again after a recount.
        let c = Connection::open(dir.path().join("switchyard.db")).unwrap();
        c.execute_batch("DELETE FROM queue_counts; INSERT OR REPLACE INTO dead_letter_counts VALUES ('f', 7)").unwrap();
        drop(c);
        let store = Store::open(dir.path()).unwrap();
        store.recount().await.unwrap();
        assert!(store.dead_letter_counts().await.unwrap().is_empty());
        let mut depths = store.depths().await.unwrap();
        depths.sort();
        assert_eq!(depths, vec![("f".to_string(), 3, 30), ("g".to_string(), 1, 40), ("h".to_string(), 1, 60)]);
    }

    #[tokio::test]
    async fn failing_job_does_not_spoil_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bad = store.call(|c| c.execute("INSERT INTO nowhere VALUES (1)", []).map(|_| ()));
        let good = store.enqueue(event("f", 1));
        let (bad, good) = tokio::join!(bad, good);
        assert!(bad.is_err());
        assert!(good.is_ok());
        assert_eq!(store.claim("f", 1, 10).await.unwrap().len(), 1);
    }
}
