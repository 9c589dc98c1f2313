//! Record JSON and event shape for messages received from the server,
//! checked field by field and with aws-lambda-powertools' `SqsModel`.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};
use serde_json::{Value, json};
use switchyard_sdk::{Outcome, PayloadField, Record, Source};

use crate::support::{REGION, Sqs, python, source, source_config, start};

fn attribute(data_type: &str) -> aws_sdk_sqs::types::builders::MessageAttributeValueBuilder {
    MessageAttributeValue::builder().data_type(data_type)
}

/// Validates `event` with Powertools' parser model, as a Python function
/// using it would; panics with Python's error otherwise.
fn powertools_accepts(event: &Value) {
    let script = "import json, sys\n\
        from aws_lambda_powertools.utilities.parser.models import SqsModel\n\
        event = SqsModel.model_validate(json.load(sys.stdin))\n\
        print(json.dumps([r.messageId for r in event.Records]))\n";
    let python = python();
    let mut child = Command::new(&python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", python.display()));
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(event.to_string().as_bytes())
        .expect("write the event to Python");
    let output = child.wait_with_output().expect("wait for Python");
    assert!(
        output.status.success(),
        "SqsModel refused the event ({}):\n{}\nevent: {event:#}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let ids: Vec<String> = serde_json::from_slice(&output.stdout).expect("Python prints the message ids");
    let expected: Vec<&str> =
        event["Records"].as_array().expect("Records").iter().filter_map(|r| r["messageId"].as_str()).collect();
    assert_eq!(ids, expected, "Powertools read the records back");
}

fn millis(text: &Value) -> u128 {
    text.as_str().and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("a millisecond timestamp string: {text}"))
}

#[tokio::test]
async fn records_and_event_have_lambdas_sqs_shape() {
    let sqs = Sqs::connect();
    let queue_url = sqs.queue("envelope", &[]).await;
    let before = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis();
    let sent = sqs
        .client
        .send_message()
        .queue_url(&queue_url)
        .message_body(r#"{"order":1}"#)
        .message_attributes("trace", attribute("String").string_value("abc").build().expect("typed"))
        .message_attributes("attempt", attribute("Number").string_value("3").build().expect("typed"))
        .message_attributes(
            "raw",
            attribute("Binary").binary_value(Blob::new(vec![0u8, 1, 255])).build().expect("typed"),
        )
        .send()
        .await
        .expect("send with attributes");
    let id = sent.message_id().expect("a message id").to_string();
    let plain = sqs.send(&queue_url, "plain text").await;

    let source = source(&source_config(&sqs, &queue_url));
    let envelope = source.envelope();
    let mut running = start(source);
    let mut records: Vec<Record> =
        vec![running.next(Duration::from_secs(10)).await, running.next(Duration::from_secs(10)).await];
    records.sort_by_key(|r| r.id != id);
    let (first, second) = (&records[0], &records[1]);

    assert_eq!(first.id, id, "the message id names the record");
    assert_eq!(second.id, plain);
    assert!(first.scope.is_none() && first.key.is_none(), "a standard queue promises no order");
    assert_eq!(first.size, r#"{"order":1}"#.len());
    let created = first.created_at.duration_since(UNIX_EPOCH).expect("after 1970").as_millis();
    assert!(
        created >= before - 1000 && created <= before + 60_000,
        "created_at is SentTimestamp: {created} vs {before}"
    );

    let data = &first.data;
    let keys: Vec<&str> = data.as_object().expect("an object").keys().map(String::as_str).collect();
    let mut sorted_keys = keys.clone();
    sorted_keys.sort_unstable();
    assert_eq!(
        sorted_keys,
        [
            "attributes",
            "awsRegion",
            "body",
            "eventSource",
            "eventSourceARN",
            "md5OfBody",
            "md5OfMessageAttributes",
            "messageAttributes",
            "messageId",
            "receiptHandle"
        ]
    );
    assert_eq!(data["messageId"], json!(id));
    assert!(data["receiptHandle"].as_str().is_some_and(|r| !r.is_empty()), "{data}");
    assert_eq!(data["body"], r#"{"order":1}"#);
    assert_eq!(data["md5OfBody"], json!(sent.md5_of_message_body().expect("SQS returns the body's MD5")));
    assert_eq!(
        data["md5OfMessageAttributes"],
        json!(sent.md5_of_message_attributes().expect("SQS returns the attributes' MD5"))
    );
    assert_eq!(data["eventSource"], "aws:sqs");
    let queue_name = queue_url.rsplit('/').next().expect("a queue name");
    let account = queue_url.rsplit('/').nth(1).expect("an account");
    assert_eq!(data["eventSourceARN"], json!(format!("arn:aws:sqs:{REGION}:{account}:{queue_name}")));
    assert_eq!(data["awsRegion"], REGION);

    let attributes = &data["attributes"];
    assert_eq!(attributes["ApproximateReceiveCount"], "1");
    assert!(attributes["SenderId"].as_str().is_some_and(|s| !s.is_empty()), "{attributes}");
    let sent_at = millis(&attributes["SentTimestamp"]);
    assert!(millis(&attributes["ApproximateFirstReceiveTimestamp"]) >= sent_at, "{attributes}");
    assert_eq!(sent_at, created, "created_at is SentTimestamp");
    for fifo_only in ["SequenceNumber", "MessageGroupId", "MessageDeduplicationId"] {
        assert!(attributes.get(fifo_only).is_none(), "{fifo_only} on a standard queue: {attributes}");
    }

    assert_eq!(
        data["messageAttributes"],
        json!({
            "attempt": {"stringValue": "3", "stringListValues": [], "binaryListValues": [], "dataType": "Number"},
            "raw": {"binaryValue": "AAH/", "stringListValues": [], "binaryListValues": [], "dataType": "Binary"},
            "trace": {"stringValue": "abc", "stringListValues": [], "binaryListValues": [], "dataType": "String"},
        })
    );
    assert_eq!(second.data["messageAttributes"], json!({}));
    assert!(second.data.get("md5OfMessageAttributes").is_none(), "only with attributes: {}", second.data);

    let event = envelope.event(&[&first.data, &second.data]);
    assert_eq!(event, json!({"Records": [first.data, second.data]}));
    assert_eq!(envelope.payload_fields(&first.data), &[PayloadField::text("body")]);
    assert_eq!(envelope.item_id(&json!(id)), Some(id.clone()), "batchItemFailures name the messageId");
    powertools_accepts(&event);

    for record in records {
        record.ack.complete(Outcome::Delivered);
    }
    running.stop().await.expect("clean shutdown");
    sqs.wait_empty(&queue_url, Duration::from_secs(10)).await;
    sqs.delete(&queue_url).await;
}

#[tokio::test]
async fn fifo_records_carry_their_group_and_sequence() {
    let sqs = Sqs::connect();
    let queue_url = sqs.queue("envelope", &[(QueueAttributeName::FifoQueue, "true")]).await;
    let sent = sqs
        .client
        .send_message()
        .queue_url(&queue_url)
        .message_body("first of o-7")
        .message_group_id("o-7")
        .message_deduplication_id("dedup-1")
        .send()
        .await
        .expect("send to a FIFO queue");

    let source = source(&source_config(&sqs, &queue_url));
    assert!(source.is_fifo());
    let envelope = source.envelope();
    let mut running = start(source);
    let record = running.next(Duration::from_secs(10)).await;
    assert_eq!(record.scope.as_deref(), Some("o-7"), "the message group is the record's scope");
    let attributes = &record.data["attributes"];
    assert_eq!(attributes["MessageGroupId"], "o-7");
    assert_eq!(attributes["MessageDeduplicationId"], "dedup-1");
    assert_eq!(attributes["SequenceNumber"], json!(sent.sequence_number().expect("FIFO sends have a sequence number")));
    assert_eq!(attributes["ApproximateReceiveCount"], "1");
    assert!(record.data["eventSourceARN"].as_str().is_some_and(|arn| arn.ends_with(".fifo")), "{}", record.data);
    powertools_accepts(&envelope.event(&[&record.data]));
    record.ack.complete(Outcome::Delivered);
    running.stop().await.expect("clean shutdown");
    sqs.wait_empty(&queue_url, Duration::from_secs(10)).await;
    sqs.delete(&queue_url).await;
}
