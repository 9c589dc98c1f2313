//! Record JSON and event shape for records read from the server, checked
//! field by field and with aws-lambda-powertools' `KinesisDataStreamModel`.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use switchyard_kinesis::MemoryCheckpoints;
use switchyard_sdk::{Outcome, Source};

use crate::support::{REGION, moto, python, source, source_config, start};

/// Validates `event` with Powertools' parser model, as a Python function
/// using it would; returns what Python read back (sequence numbers and
/// decoded data).
fn powertools_reads(event: &Value) -> Option<Value> {
    let python = python()?;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("event.json");
    std::fs::write(&path, event.to_string()).expect("write the event");
    let script = "import json, sys\n\
        from aws_lambda_powertools.utilities.parser.models import KinesisDataStreamModel\n\
        event = KinesisDataStreamModel.model_validate(json.load(open(sys.argv[1])))\n\
        print(json.dumps([[r.kinesis.sequenceNumber, r.kinesis.data.decode(), r.eventSourceARN] for r in event.Records]))\n";
    let output = Command::new(&python)
        .args(["-c", script])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", python.display()));
    assert!(
        output.status.success(),
        "KinesisDataStreamModel refused the event ({}):\n{}\nevent: {event:#}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Some(serde_json::from_slice(&output.stdout).expect("Python prints JSON"))
}

#[tokio::test]
async fn records_and_event_have_lambdas_kinesis_shape() {
    let Some(kinesis) = moto() else { return };
    let stream = kinesis.stream("envelope", 1).await;
    let before = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs_f64();
    let written = kinesis
        .put(&stream, &[("order-1".into(), r#"{"order":1}"#.into()), ("order-2".into(), "plain text".into())])
        .await;
    let after = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs_f64();
    let summary = kinesis.client.describe_stream_summary().stream_name(&stream).send().await.expect("describe");
    let arn = summary.stream_description_summary().expect("a summary").stream_arn().to_string();
    let account = arn.split(':').nth(4).expect("an account in the ARN").to_string();

    let source = source(&source_config(&kinesis, &stream), Arc::new(MemoryCheckpoints::new()));
    let envelope = source.envelope();
    let mut running = start(source);
    let first = running.next(Duration::from_secs(20)).await;
    let second = running.next(Duration::from_secs(20)).await;
    let (shard, sequence) = &written[0];
    let arrival = first.data["kinesis"]["approximateArrivalTimestamp"].as_f64().expect("epoch seconds");
    assert!(arrival >= before.floor() - 1.0 && arrival <= after + 1.0, "{arrival} not in {before}..{after}");
    assert_eq!(
        first.data,
        json!({
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": "order-1",
                "sequenceNumber": sequence,
                "data": "eyJvcmRlciI6MX0=",
                "approximateArrivalTimestamp": arrival
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": format!("{shard}:{sequence}"),
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": format!("arn:aws:iam::{account}:role/switchyard"),
            "awsRegion": REGION,
            "eventSourceARN": arn
        })
    );
    assert_eq!(first.size, br#"{"order":1}"#.len());
    assert_eq!(first.id, *sequence);
    let created = first.created_at.duration_since(UNIX_EPOCH).expect("after 1970").as_secs_f64();
    assert!((created - arrival).abs() < 0.001, "created_at is the arrival time");

    let event = envelope.event(&[&first.data, &second.data]);
    assert_eq!(event["Records"].as_array().map(Vec::len), Some(2));
    assert_eq!(envelope.item_id(&json!(sequence)).as_deref(), Some(sequence.as_str()));
    let (key, info) = envelope.batch_info(&[&first.data, &second.data]).expect("a batch info");
    assert_eq!(key, "KinesisBatchInfo");
    assert_eq!(info["shardId"], json!(shard));
    assert_eq!(info["startSequenceNumber"], json!(sequence));
    assert_eq!(info["endSequenceNumber"], json!(written[1].1));
    assert_eq!(info["batchSize"], json!(2));
    assert_eq!(info["streamArn"], json!(arn));
    if let Some(read) = powertools_reads(&event) {
        assert_eq!(read, json!([[sequence, r#"{"order":1}"#, arn], [written[1].1, "plain text", arn]]));
    }
    first.ack.complete(Outcome::Delivered);
    second.ack.complete(Outcome::Delivered);
    running.stop().await.expect("stops cleanly");
    kinesis.delete(&stream).await;
}
