//! The SQS destination: sends records as messages with SendMessageBatch and
//! succeeds only once SQS took every one.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use switchyard_aws::{RETRY_WAITS, Target, send_entries};
use switchyard_sdk::{ConnectorError, Destination};
use tokio::sync::OnceCell;

use crate::client;
use crate::config::{DestinationSettings, SqsDestinationConfig};
use crate::error::{classify, describe};
use crate::source::Failed;

/// SQS's limit on one message body, and on all bodies of one batch call.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Entries of one SendMessageBatch call at most.
const MAX_ENTRIES: usize = 10;
/// How long one SendMessageBatch call may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct SqsDestination {
    settings: DestinationSettings,
    client: OnceCell<Client>,
}

impl SqsDestination {
    /// Checks the configuration; the client is built on the first send.
    pub fn new(config: &SqsDestinationConfig) -> Result<Self, ConnectorError> {
        Ok(Self { settings: config.validate()?, client: OnceCell::new() })
    }

    pub fn queue_url(&self) -> &str {
        &self.settings.queue.url
    }

    /// The `MessageGroupId` sent with every message, if any.
    pub fn message_group_id(&self) -> Option<&str> {
        self.settings.message_group_id.as_deref()
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async { client::connect(&self.settings.client, &self.settings.queue).await.client })
            .await
    }

    /// Sends the bodies at `indexes` of `bodies`, each under its index as the
    /// entry id; returns the entries SQS did not take.
    async fn send_batch(&self, bodies: &[&str], indexes: &[usize]) -> Result<Vec<Failed>, ConnectorError> {
        let queue = &self.settings.queue;
        let mut entries = Vec::with_capacity(indexes.len());
        for &index in indexes {
            let Some(body) = bodies.get(index) else { continue };
            // Content-based, like SQS's own ContentBasedDeduplication: a send
            // the engine retries within five minutes is not enqueued twice.
            let dedup = queue.fifo.then(|| hex(&Sha256::digest(body.as_bytes())));
            let entry = SendMessageBatchRequestEntry::builder()
                .id(index.to_string())
                .message_body(*body)
                .set_message_group_id(self.settings.message_group_id.clone())
                .set_message_deduplication_id(dedup)
                .build()
                .map_err(|e| ConnectorError::Config(format!("building a SendMessageBatch entry: {e}")))?;
            entries.push(entry);
        }
        let request = self.client().await.send_message_batch().queue_url(&queue.url).set_entries(Some(entries)).send();
        let output = match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => return Err(classify(&e, describe(&e, "SendMessageBatch", queue))),
            Err(_) => {
                return Err(ConnectorError::Unavailable(format!(
                    "SQS did not answer SendMessageBatch on queue {} within {REQUEST_TIMEOUT:?}",
                    queue.url
                )));
            }
        };
        let mut failed: Vec<Failed> = output
            .failed()
            .iter()
            .map(|e| Failed {
                index: e.id().parse().unwrap_or(usize::MAX),
                sender_fault: e.sender_fault(),
                code: e.code().to_string(),
                message: e.message().unwrap_or_default().to_string(),
            })
            .collect();
        // An entry SQS says nothing about was not confirmed: send it again.
        let answered: HashSet<usize> = output
            .successful()
            .iter()
            .filter_map(|e| e.id().parse().ok())
            .chain(failed.iter().map(|f| f.index))
            .collect();
        for &index in indexes {
            if !answered.contains(&index) {
                failed.push(Failed {
                    index,
                    sender_fault: false,
                    code: "NoResult".into(),
                    message: "SQS returned no result for this entry".into(),
                });
            }
        }
        Ok(failed)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs of entries one call takes, in order.
fn chunks(sizes: &[usize]) -> Vec<Vec<usize>> {
    switchyard_sdk::chunks(sizes, MAX_ENTRIES, MAX_MESSAGE_BYTES)
}

/// Checks every record before anything is sent: SQS takes text only, of at
/// most `MAX_MESSAGE_BYTES`.
fn bodies<'a>(records: &'a [Bytes], queue_url: &str) -> Result<Vec<&'a str>, ConnectorError> {
    records
        .iter()
        .enumerate()
        .map(|(index, record)| {
            if record.len() > MAX_MESSAGE_BYTES {
                return Err(ConnectorError::Refused(format!(
                    "record {index} for queue {queue_url} is {} bytes, over SQS's message size limit of \
                     {MAX_MESSAGE_BYTES} bytes (256 KiB)",
                    record.len()
                )));
            }
            std::str::from_utf8(record).map_err(|e| {
                ConnectorError::Refused(format!("record {index} for queue {queue_url} is not UTF-8 text: {e}"))
            })
        })
        .collect()
}

#[async_trait]
impl Destination for SqsDestination {
    fn kind(&self) -> &'static str {
        "sqs"
    }

    /// Sends in order, ten messages (or 256 KiB) a call. A failed send may
    /// have sent some of the records: sending again duplicates those on a
    /// standard queue (at least once); a FIFO queue drops the duplicates
    /// within its five-minute deduplication window.
    async fn send(&self, records: &[Bytes]) -> Result<(), ConnectorError> {
        let queue_url = self.queue_url();
        let bodies = bodies(records, queue_url)?;
        let sizes: Vec<usize> = bodies.iter().map(|b| b.len()).collect();
        for chunk in chunks(&sizes) {
            send_entries(
                Target { service: "SQS", unit: "messages", name: &format!("queue {queue_url}") },
                chunk,
                &RETRY_WAITS,
                |indexes| {
                    let bodies = &bodies;
                    async move { self.send_batch(bodies, &indexes).await }
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
    fn chunks_hold_ten_entries_or_256_kib() {
        assert_eq!(chunks(&[1; 23]).iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 3]);
        let half = MAX_MESSAGE_BYTES / 2;
        assert_eq!(chunks(&[half, half, 1, MAX_MESSAGE_BYTES, 5]), [vec![0, 1], vec![2], vec![3], vec![4]]);
        assert!(chunks(&[]).is_empty());
    }

    #[test]
    fn oversized_and_binary_records_are_refused_before_sending() {
        let records = [Bytes::from("ok"), Bytes::from(vec![b'x'; MAX_MESSAGE_BYTES + 1])];
        let error = bodies(&records, "q").expect_err("too big");
        assert!(error.to_string().contains("record 1 for queue q is 262145 bytes"), "{error}");
        assert!(error.to_string().contains("limit of 262144 bytes (256 KiB)"), "{error}");
        let error = bodies(&[Bytes::from_static(&[0xff])], "q").expect_err("not UTF-8");
        assert!(error.to_string().contains("not UTF-8"), "{error}");
        assert_eq!(bodies(&[Bytes::from(vec![b'x'; MAX_MESSAGE_BYTES])], "q").expect("at the limit").len(), 1);
    }

    #[test]
    fn dedup_ids_are_sha256_hex() {
        assert_eq!(hex(&Sha256::digest(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
