//! Kinesis shard checkpoints kept in the embedded state, next to the async
//! queue: one durable row per mapping and shard, written in the store's
//! group commits.

use async_trait::async_trait;
use switchyard_kinesis::CheckpointStore;
use switchyard_sdk::ConnectorError;

use super::Store;

pub struct StoredCheckpoints {
    store: Store,
}

impl StoredCheckpoints {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

fn state_error(e: super::StoreError) -> ConnectorError {
    ConnectorError::Unavailable(format!("checkpoint store: {e}"))
}

#[async_trait]
impl CheckpointStore for StoredCheckpoints {
    async fn load(&self, mapping: &str, shard: &str) -> Result<Option<String>, ConnectorError> {
        self.store.checkpoint(mapping, shard).await.map_err(state_error)
    }

    async fn save(&self, mapping: &str, shard: &str, sequence: &str) -> Result<(), ConnectorError> {
        self.store.save_checkpoint(mapping, shard, sequence).await.map_err(state_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn checkpoints_survive_reopening_the_store() {
        let dir = tempfile::tempdir().unwrap();
        {
            let checkpoints = StoredCheckpoints::new(Store::open(dir.path()).unwrap());
            assert_eq!(checkpoints.load("clicks", "s/shardId-0").await.unwrap(), None);
            checkpoints.save("clicks", "s/shardId-0", "495901").await.unwrap();
            checkpoints.save("clicks", "s/shardId-0", "495902").await.unwrap();
            checkpoints.save("other", "s/shardId-0", "1").await.unwrap();
        }
        let checkpoints = StoredCheckpoints::new(Store::open(dir.path()).unwrap());
        assert_eq!(checkpoints.load("clicks", "s/shardId-0").await.unwrap().as_deref(), Some("495902"));
        assert_eq!(checkpoints.load("other", "s/shardId-0").await.unwrap().as_deref(), Some("1"));
    }
}
