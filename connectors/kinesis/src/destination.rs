//! The stream destination: writes records with PutRecords and succeeds only
//! once Kinesis took every one.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use switchyard_aws::{RETRY_WAITS, Target, send_entries};
use switchyard_sdk::{ConnectorError, Destination};
use tokio::sync::OnceCell;

use crate::client;
use crate::config::{DestinationSettings, KinesisDestinationConfig};
use crate::error::{classify, describe};

/// Kinesis's limit on one record: its data and partition key together.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Kinesis's limit on one PutRecords call, all records together.
pub const MAX_CALL_BYTES: usize = 5 * 1024 * 1024;
/// Records of one PutRecords call at most.
pub const MAX_CALL_RECORDS: usize = 500;
/// How long one PutRecords call may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct KinesisDestination {
    settings: DestinationSettings,
    client: OnceCell<Client>,
}

/// One record Kinesis did not take in a PutRecords call (Kinesis fails
/// single records only for throttling and its own errors: never the sender's
/// fault).
type Failed = switchyard_aws::FailedEntry;

impl KinesisDestination {
    /// Checks the configuration; the client is built on the first send.
    pub fn new(config: &KinesisDestinationConfig) -> Result<Self, ConnectorError> {
        Ok(Self { settings: config.validate()?, client: OnceCell::new() })
    }

    pub fn stream_name(&self) -> &str {
        &self.settings.stream.name
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async { client::connect(&self.settings.client, &self.settings.stream).await.client })
            .await
    }

    /// Writes the records at `indexes` in one call; returns those Kinesis
    /// did not take.
    async fn put(&self, records: &[Bytes], keys: &[String], indexes: &[usize]) -> Result<Vec<Failed>, ConnectorError> {
        let stream = &self.settings.stream.name;
        let mut entries = Vec::with_capacity(indexes.len());
        for &index in indexes {
            let (Some(record), Some(key)) = (records.get(index), keys.get(index)) else { continue };
            let entry = PutRecordsRequestEntry::builder()
                .data(Blob::new(record.to_vec()))
                .partition_key(key)
                .build()
                .map_err(|e| ConnectorError::Config(format!("building a PutRecords entry: {e}")))?;
            entries.push(entry);
        }
        let request = self.client().await.put_records().stream_name(stream).set_records(Some(entries)).send();
        let output = match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => return Err(classify(&e, describe(&e, "PutRecords", stream))),
            Err(_) => {
                return Err(ConnectorError::Unavailable(format!(
                    "Kinesis did not answer PutRecords on stream {stream} within {REQUEST_TIMEOUT:?}"
                )));
            }
        };
        // Results come in the order of the entries sent; a missing result
        // was not confirmed, so it counts as failed.
        let results = output.records();
        let failed = indexes
            .iter()
            .enumerate()
            .filter_map(|(position, &index)| match results.get(position) {
                Some(result) if result.error_code().is_none() => None,
                Some(result) => Some(Failed {
                    index,
                    sender_fault: false,
                    code: result.error_code().unwrap_or_default().to_string(),
                    message: result.error_message().unwrap_or_default().to_string(),
                }),
                None => Some(Failed {
                    index,
                    sender_fault: false,
                    code: "NoResult".into(),
                    message: "Kinesis returned no result for this record".into(),
                }),
            })
            .collect();
        Ok(failed)
    }
}

/// The default partition key: the first 16 bytes of the record's SHA-256 in
/// hex, so records spread over the shards and a resend lands where the first
/// write did.
fn content_key(record: &[u8]) -> String {
    Sha256::digest(record).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Checks every record against Kinesis's limit before anything is sent.
fn check_sizes(records: &[Bytes], keys: &[String], stream: &str) -> Result<(), ConnectorError> {
    for (index, (record, key)) in records.iter().zip(keys).enumerate() {
        let size = record.len() + key.len();
        if size > MAX_RECORD_BYTES {
            return Err(ConnectorError::Refused(format!(
                "record {index} for stream {stream} is {size} bytes with its partition key, over Kinesis's record \
                 size limit of {MAX_RECORD_BYTES} bytes (1 MiB)"
            )));
        }
    }
    Ok(())
}

/// Runs of entries one call takes, in order.
fn chunks(sizes: &[usize]) -> Vec<Vec<usize>> {
    switchyard_sdk::chunks(sizes, MAX_CALL_RECORDS, MAX_CALL_BYTES)
}

#[async_trait]
impl Destination for KinesisDestination {
    fn kind(&self) -> &'static str {
        "kinesis"
    }

    /// Writes in order, 500 records (or 5 MiB) a call. A failed send may
    /// have written some of the records: sending again duplicates those (at
    /// least once).
    async fn send(&self, records: &[Bytes]) -> Result<(), ConnectorError> {
        let stream = self.stream_name();
        let keys: Vec<String> = records
            .iter()
            .map(|record| self.settings.partition_key.clone().unwrap_or_else(|| content_key(record)))
            .collect();
        check_sizes(records, &keys, stream)?;
        let sizes: Vec<usize> = records.iter().zip(&keys).map(|(r, k)| r.len() + k.len()).collect();
        for chunk in chunks(&sizes) {
            send_entries(
                Target { service: "Kinesis", unit: "records", name: &format!("stream {stream}") },
                chunk,
                &RETRY_WAITS,
                |indexes| {
                    let (records, keys) = (records, &keys);
                    async move { self.put(records, keys, &indexes).await }
                },
            )
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_hold_500_records_or_5_mib() {
        assert_eq!(chunks(&[1; 1201]).iter().map(Vec::len).collect::<Vec<_>>(), [500, 500, 201]);
        let mib = 1024 * 1024;
        assert_eq!(chunks(&[mib, mib, mib, mib, mib, 1, mib]), [vec![0, 1, 2, 3, 4], vec![5, 6]]);
        assert!(chunks(&[]).is_empty());
    }

    #[test]
    fn oversized_records_are_refused_before_sending() {
        let key = content_key(b"x");
        assert_eq!(key.len(), 32);
        let records = [Bytes::from("ok"), Bytes::from(vec![b'x'; MAX_RECORD_BYTES])];
        let keys = vec![key.clone(), key.clone()];
        let error = check_sizes(&records, &keys, "s").expect_err("too big with its key");
        assert!(error.to_string().contains("record 1 for stream s is 1048608 bytes"), "{error}");
        assert!(error.to_string().contains("limit of 1048576 bytes (1 MiB)"), "{error}");
        let fits = [Bytes::from(vec![b'x'; MAX_RECORD_BYTES - key.len()])];
        assert!(check_sizes(&fits, &[key], "s").is_ok());
    }

    #[test]
    fn content_keys_are_stable_and_differ() {
        assert_eq!(content_key(b"abc"), "ba7816bf8f01cfea414140de5dae2223");
        assert_ne!(content_key(b"a"), content_key(b"b"));
    }
}
