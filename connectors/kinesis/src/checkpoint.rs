//! Where a mapping keeps how far it got in each shard.
//!
//! Kinesis keeps no consumer position of its own (unlike a Kafka consumer
//! group): the source stores, per mapping and shard, the sequence number of
//! the last record whose every predecessor in the shard was finished, and
//! resumes after it. [`SHARD_END`] marks a shard that was read to its end and
//! fully acknowledged, which is what lets the children of a reshard start.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use switchyard_sdk::ConnectorError;

/// The checkpoint of a closed shard whose every record was finished.
pub const SHARD_END: &str = "SHARD_END";

/// Keeps checkpoints: `mapping` is the mapping's name, `shard` a key naming
/// the stream and the shard (`<stream>/<shardId>`), `sequence` a record's
/// sequence number or [`SHARD_END`].
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    /// The stored checkpoint, if any.
    async fn load(&self, mapping: &str, shard: &str) -> Result<Option<String>, ConnectorError>;

    /// Replaces the checkpoint; durable once it returns.
    async fn save(&self, mapping: &str, shard: &str, sequence: &str) -> Result<(), ConnectorError>;
}

type Checkpoints = BTreeMap<String, BTreeMap<String, String>>;

/// Checkpoints in memory: they last as long as the value (tests, and
/// mappings that may start over after a restart).
#[derive(Debug, Default)]
pub struct MemoryCheckpoints {
    saved: Mutex<Checkpoints>,
}

impl MemoryCheckpoints {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every checkpoint of `mapping`, by shard key.
    pub fn snapshot(&self, mapping: &str) -> BTreeMap<String, String> {
        self.saved.lock().map(|saved| saved.get(mapping).cloned().unwrap_or_default()).unwrap_or_default()
    }
}

#[async_trait]
impl CheckpointStore for MemoryCheckpoints {
    async fn load(&self, mapping: &str, shard: &str) -> Result<Option<String>, ConnectorError> {
        let saved = self.saved.lock().map_err(|_| poisoned())?;
        Ok(saved.get(mapping).and_then(|shards| shards.get(shard)).cloned())
    }

    async fn save(&self, mapping: &str, shard: &str, sequence: &str) -> Result<(), ConnectorError> {
        let mut saved = self.saved.lock().map_err(|_| poisoned())?;
        saved.entry(mapping.to_string()).or_default().insert(shard.to_string(), sequence.to_string());
        Ok(())
    }
}

fn poisoned() -> ConnectorError {
    ConnectorError::Unavailable("the checkpoint store's lock is poisoned".into())
}

/// Checkpoints in one JSON file, `{"<mapping>": {"<shard>": "<sequence>"}}`.
///
/// Every save rewrites the file the crash-safe way: a temporary file next to
/// it, flushed to disk, renamed over it, and the directory flushed, so the
/// file is always either the old or the new checkpoints. One process owns a
/// file: two `FileCheckpoints` on the same path in one process must not run
/// at the same time.
#[derive(Debug)]
pub struct FileCheckpoints {
    path: PathBuf,
    /// What the file holds, read on first use; saves go through it.
    cache: tokio::sync::Mutex<Option<Checkpoints>>,
}

impl FileCheckpoints {
    /// Checkpoints at `path`; the file is created on the first save.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), cache: tokio::sync::Mutex::new(None) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn read(path: PathBuf) -> Result<Checkpoints, ConnectorError> {
        let shown = path.display().to_string();
        let text = match tokio::fs::read(&path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Checkpoints::new()),
            Err(e) => return Err(ConnectorError::Unavailable(format!("reading checkpoints {shown}: {e}"))),
        };
        serde_json::from_slice(&text)
            .map_err(|e| ConnectorError::Config(format!("checkpoints {shown} are not valid JSON: {e}")))
    }
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, fsync
/// of the directory).
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "checkpoints".into());
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // The rename itself is durable only once the directory is.
    std::fs::File::open(dir)?.sync_all()
}

#[async_trait]
impl CheckpointStore for FileCheckpoints {
    async fn load(&self, mapping: &str, shard: &str) -> Result<Option<String>, ConnectorError> {
        let mut cache = self.cache.lock().await;
        if cache.is_none() {
            *cache = Some(Self::read(self.path.clone()).await?);
        }
        Ok(cache.as_ref().and_then(|all| all.get(mapping)).and_then(|shards| shards.get(shard)).cloned())
    }

    async fn save(&self, mapping: &str, shard: &str, sequence: &str) -> Result<(), ConnectorError> {
        // Held across the write: saves of several shards go to the file one
        // at a time, each with everything saved before it.
        let mut cache = self.cache.lock().await;
        if cache.is_none() {
            *cache = Some(Self::read(self.path.clone()).await?);
        }
        let mut next = cache.clone().unwrap_or_default();
        next.entry(mapping.to_string()).or_default().insert(shard.to_string(), sequence.to_string());
        let bytes = serde_json::to_vec_pretty(&next)
            .map_err(|e| ConnectorError::Unavailable(format!("encoding checkpoints: {e}")))?;
        let path = self.path.clone();
        let written = tokio::task::spawn_blocking(move || write_atomically(&path, &bytes)).await;
        match written {
            Ok(Ok(())) => {
                *cache = Some(next);
                Ok(())
            }
            Ok(Err(e)) => Err(ConnectorError::Unavailable(format!("writing checkpoints {}: {e}", self.path.display()))),
            Err(e) => Err(ConnectorError::Unavailable(format!("writing checkpoints {}: {e}", self.path.display()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_keeps_the_last_save() {
        let store = MemoryCheckpoints::new();
        assert_eq!(store.load("m", "s/shard-0").await.expect("loads"), None);
        store.save("m", "s/shard-0", "1").await.expect("saves");
        store.save("m", "s/shard-0", "2").await.expect("saves");
        store.save("other", "s/shard-0", "9").await.expect("saves");
        assert_eq!(store.load("m", "s/shard-0").await.expect("loads").as_deref(), Some("2"));
        assert_eq!(store.snapshot("m").len(), 1);
    }

    #[tokio::test]
    async fn file_survives_a_new_store_on_the_same_path() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("checkpoints.json");
        let store = FileCheckpoints::new(&path);
        assert_eq!(store.load("m", "s/a").await.expect("no file yet"), None);
        store.save("m", "s/a", "100").await.expect("saves");
        store.save("m", "s/b", SHARD_END).await.expect("saves");
        store.save("m", "s/a", "200").await.expect("saves");
        let again = FileCheckpoints::new(&path);
        assert_eq!(again.load("m", "s/a").await.expect("loads").as_deref(), Some("200"));
        assert_eq!(again.load("m", "s/b").await.expect("loads").as_deref(), Some(SHARD_END));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).expect("lists").collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[tokio::test]
    async fn a_broken_file_is_a_config_error() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("checkpoints.json");
        std::fs::write(&path, "not json").expect("writes");
        let error = FileCheckpoints::new(&path).load("m", "s").await.expect_err("broken");
        assert!(matches!(error, ConnectorError::Config(_)), "{error:?}");
    }
}
