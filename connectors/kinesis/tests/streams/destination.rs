//! The destination writes records that read back unchanged, with a fixed or
//! a content-derived partition key.

use bytes::Bytes;
use switchyard_kinesis::{KinesisDestination, KinesisDestinationConfig, MAX_RECORD_BYTES};
use switchyard_sdk::{ConnectorError, Destination};

use crate::support::{REGION, moto};

#[tokio::test]
async fn put_records_round_trip() {
    let Some(kinesis) = moto() else { return };
    let stream = kinesis.stream("destination", 2).await;
    let mut config = KinesisDestinationConfig::for_stream(&stream);
    config.endpoint_url = Some(kinesis.endpoint.clone());
    config.region = Some(REGION.into());
    let spread = KinesisDestination::new(&config).expect("valid config");
    assert_eq!(spread.kind(), "kinesis");
    let records: Vec<Bytes> = (0..700).map(|i| Bytes::from(format!(r#"{{"n":{i}}}"#))).collect();
    spread.send(&records).await.expect("written in two calls");
    config.partition_key = Some("fixed".into());
    let fixed = KinesisDestination::new(&config).expect("valid config");
    fixed.send(&[Bytes::from_static(b"\x00binary\xff")]).await.expect("written");

    let all = kinesis.read_all(&stream).await;
    let mut read: Vec<(String, Vec<u8>)> = all.values().flatten().cloned().collect();
    assert_eq!(read.len(), 701, "every record once");
    assert!(all.values().filter(|records| !records.is_empty()).count() == 2, "content keys spread over both shards");
    let binary = read.iter().position(|(_, data)| data.first() == Some(&0)).expect("the binary record");
    assert_eq!(read.remove(binary), ("fixed".to_string(), b"\x00binary\xff".to_vec()));
    let mut numbers: Vec<u32> = read
        .iter()
        .map(|(key, data)| {
            assert_eq!(key.len(), 32, "a hex content key");
            let value: serde_json::Value = serde_json::from_slice(data).expect("JSON as written");
            value["n"].as_u64().and_then(|n| u32::try_from(n).ok()).expect("a number")
        })
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..700).collect::<Vec<_>>());
    kinesis.delete(&stream).await;
}

#[tokio::test]
async fn oversized_records_and_missing_streams_fail_clearly() {
    let Some(kinesis) = moto() else { return };
    let mut config = KinesisDestinationConfig::for_stream("sy-no-such-stream");
    config.endpoint_url = Some(kinesis.endpoint.clone());
    config.region = Some(REGION.into());
    let destination = KinesisDestination::new(&config).expect("valid config");
    let error = destination.send(&[Bytes::from(vec![b'x'; MAX_RECORD_BYTES])]).await.expect_err("too big");
    assert!(error.to_string().contains("over Kinesis's record size limit of 1048576 bytes"), "{error}");
    let error = destination.send(&[Bytes::from_static(b"x")]).await.expect_err("no stream");
    assert!(matches!(error, ConnectorError::Refused(_)), "{error:?}");
    assert!(error.to_string().contains("sy-no-such-stream does not exist"), "{error}");
}
