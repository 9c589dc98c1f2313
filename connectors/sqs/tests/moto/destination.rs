//! The SQS destination: records read back from standard and FIFO queues,
//! batches split by count and size, refusals and missing queues.

use std::time::Duration;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use bytes::Bytes;
use switchyard_sdk::{ConnectorError, Destination};
use switchyard_sqs::{DEFAULT_MESSAGE_GROUP_ID, MAX_MESSAGE_BYTES, SqsDestination, SqsDestinationConfig};

use crate::support::{REGION, Sqs};

fn destination(sqs: &Sqs, queue_url: &str) -> SqsDestination {
    SqsDestination::new(&SqsDestinationConfig {
        queue_url: queue_url.to_string(),
        endpoint_url: Some(sqs.endpoint.clone()),
        region: Some(REGION.to_string()),
        message_group_id: None,
    })
    .expect("valid destination config")
}

/// Everything in the queue, in the order a FIFO queue hands it out.
async fn drain(sqs: &Sqs, queue_url: &str, expected: usize) -> Vec<aws_sdk_sqs::types::Message> {
    let mut all = Vec::new();
    for _ in 0..50 {
        if all.len() >= expected {
            break;
        }
        for message in sqs.receive(queue_url, 10, 1, None).await {
            let receipt = message.receipt_handle().expect("a receipt handle").to_string();
            sqs.client.delete_message().queue_url(queue_url).receipt_handle(receipt).send().await.expect("delete");
            all.push(message);
        }
    }
    all
}

#[tokio::test]
async fn standard_queue_gets_every_record() {
    let sqs = Sqs::connect();
    let queue_url = sqs.queue("destination", &[]).await;
    let destination = destination(&sqs, &queue_url);
    assert_eq!(destination.kind(), "sqs");
    assert_eq!(destination.message_group_id(), None);
    // 23 records: three calls of at most ten.
    let records: Vec<Bytes> = (0..23).map(|i| Bytes::from(format!("{{\"n\":{i}}}"))).collect();
    destination.send(&records).await.expect("all sent");
    let mut bodies: Vec<String> =
        drain(&sqs, &queue_url, records.len()).await.iter().filter_map(|m| m.body().map(str::to_string)).collect();
    bodies.sort_by_key(|b| b.trim_matches(|c: char| !c.is_ascii_digit()).parse::<u32>().unwrap_or(u32::MAX));
    let expected: Vec<String> = records.iter().map(|r| String::from_utf8_lossy(r).into_owned()).collect();
    assert_eq!(bodies, expected);
    destination.send(&[]).await.expect("nothing to send is fine");
    sqs.delete(&queue_url).await;
}

#[tokio::test]
async fn fifo_queue_keeps_order_in_one_group_and_drops_resent_duplicates() {
    let sqs = Sqs::connect();
    let queue_url = sqs.queue("destination", &[(QueueAttributeName::FifoQueue, "true")]).await;
    let destination = destination(&sqs, &queue_url);
    assert_eq!(destination.message_group_id(), Some(DEFAULT_MESSAGE_GROUP_ID));
    let records: Vec<Bytes> = (0..15).map(|i| Bytes::from(format!("fifo-{i}"))).collect();
    destination.send(&records).await.expect("all sent");
    // The engine retrying a send: the content-based deduplication id makes
    // SQS drop the copies.
    destination.send(&records[..5]).await.expect("resent");

    let messages = drain(&sqs, &queue_url, records.len()).await;
    let bodies: Vec<&str> = messages.iter().filter_map(|m| m.body()).collect();
    let expected: Vec<String> = (0..15).map(|i| format!("fifo-{i}")).collect();
    assert_eq!(bodies, expected, "in order, once each");
    let group = messages[0].attributes().and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId));
    assert_eq!(group.map(String::as_str), Some(DEFAULT_MESSAGE_GROUP_ID));
    let dedup = messages[0].attributes().and_then(|a| a.get(&MessageSystemAttributeName::MessageDeduplicationId));
    assert_eq!(dedup.map(String::len), Some(64), "a SHA-256 in hex: {dedup:?}");
    assert!(sqs.receive(&queue_url, 10, 1, None).await.is_empty(), "no duplicates");
    sqs.delete(&queue_url).await;
}

#[tokio::test]
async fn large_records_split_batches_and_oversized_ones_are_refused() {
    let sqs = Sqs::connect();
    let queue_url = sqs.queue("destination", &[]).await;
    let destination = destination(&sqs, &queue_url);
    // Three records of 100 KiB: two calls, as one would exceed 256 KiB.
    let big: Vec<Bytes> = (0..3).map(|i| Bytes::from(format!("{i}{}", "x".repeat(100 * 1024 - 1)))).collect();
    destination.send(&big).await.expect("sent in two calls");
    assert_eq!(drain(&sqs, &queue_url, 3).await.len(), 3);

    let oversized = Bytes::from(vec![b'y'; MAX_MESSAGE_BYTES + 1]);
    let error = destination.send(&[Bytes::from("fine"), oversized]).await.expect_err("over the limit");
    assert!(matches!(error, ConnectorError::Refused(_)), "{error:?}");
    assert!(error.to_string().contains("over SQS's message size limit of 262144 bytes (256 KiB)"), "{error}");
    assert!(sqs.receive(&queue_url, 10, 1, None).await.is_empty(), "nothing of a refused send went out");
    sqs.delete(&queue_url).await;
}

#[tokio::test]
async fn a_refused_call_fails_the_send_and_is_not_retriable() {
    let sqs = Sqs::connect();
    // moto fails whole calls, not single entries (the retry of failed entries
    // is covered by the unit tests): a queue that takes small messages only.
    let queue_url = sqs.queue("destination", &[(QueueAttributeName::MaximumMessageSize, "1024")]).await;
    let destination = destination(&sqs, &queue_url);
    let result = destination.send(&[Bytes::from("small"), Bytes::from("z".repeat(2000))]).await;
    let error = result.expect_err("the queue refuses 2000 bytes");
    eprintln!("refused: {error}");
    assert!(matches!(error, ConnectorError::Refused(_)), "{error:?}");
    assert!(error.to_string().contains(&format!("SQS refused SendMessageBatch on queue {queue_url}")), "{error}");
    sqs.delete(&queue_url).await;
}

#[tokio::test]
async fn missing_queue_and_unreachable_server_are_errors_of_their_kind() {
    let sqs = Sqs::connect();
    let missing = format!("{}/123456789012/{}", sqs.endpoint, crate::support::unique("absent"));
    let error = destination(&sqs, &missing).send(&[Bytes::from("x")]).await.expect_err("no such queue");
    assert!(matches!(error, ConnectorError::Refused(_)), "{error:?}");
    assert!(error.to_string().contains(&format!("queue {missing} does not exist")), "{error}");

    let unreachable = SqsDestination::new(&SqsDestinationConfig {
        queue_url: "http://127.0.0.1:1/123456789012/nowhere".into(),
        endpoint_url: None,
        region: Some(REGION.into()),
        message_group_id: None,
    })
    .expect("valid config");
    let error = tokio::time::timeout(Duration::from_secs(60), unreachable.send(&[Bytes::from("x")]))
        .await
        .expect("gives up within a minute")
        .expect_err("nothing listens on port 1");
    assert!(error.is_retriable(), "{error:?}");
    assert!(error.to_string().contains("cannot reach SQS"), "{error}");
}
