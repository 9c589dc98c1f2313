//! Lambda's Kinesis event: one record's JSON, the event around a batch, and
//! the `KinesisBatchInfo` of an on-failure record.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_kinesis::primitives::DateTime;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{SecondsFormat, TimeZone, Utc};
use serde_json::{Value, json};
use switchyard_sdk::{Envelope, PayloadField};

/// The role name in every record's `invokeIdentityArn`: Switchyard invokes
/// as itself, not as an IAM role, so the ARN names a role that need not exist.
pub const INVOKE_ROLE: &str = "switchyard";

/// What every record of a stream says about where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    pub name: String,
    /// `arn:aws:kinesis:<region>:<account>:stream/<name>`.
    pub arn: String,
    pub region: String,
    pub account: String,
}

impl StreamInfo {
    /// From the stream's ARN (as Kinesis reports it); the region and account
    /// come from the ARN when it has them.
    pub fn from_arn(name: &str, arn: &str, region: &str) -> Self {
        let parts: Vec<&str> = arn.split(':').collect();
        let arn_region = parts.get(3).filter(|r| !r.is_empty()).copied();
        let account = parts.get(4).filter(|a| !a.is_empty()).copied().unwrap_or("000000000000");
        Self {
            name: name.to_string(),
            arn: arn.to_string(),
            region: arn_region.unwrap_or(region).to_string(),
            account: account.to_string(),
        }
    }

    fn partition(&self) -> &'static str {
        if self.region.starts_with("cn-") {
            "aws-cn"
        } else if self.region.starts_with("us-gov-") {
            "aws-us-gov"
        } else {
            "aws"
        }
    }

    /// `arn:aws:iam::<account>:role/switchyard`.
    pub fn invoke_identity_arn(&self) -> String {
        format!("arn:{}:iam::{}:role/{INVOKE_ROLE}", self.partition(), self.account)
    }
}

/// A record as Lambda delivers it in `Records`.
pub fn record_data(record: &aws_sdk_kinesis::types::Record, shard_id: &str, stream: &StreamInfo) -> Value {
    let sequence = record.sequence_number();
    json!({
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": record.partition_key().unwrap_or_default(),
            "sequenceNumber": sequence,
            "data": STANDARD.encode(record.data().as_ref()),
            "approximateArrivalTimestamp": record.approximate_arrival_timestamp().map_or(0.0, epoch_seconds),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": format!("{shard_id}:{sequence}"),
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": stream.invoke_identity_arn(),
        "awsRegion": stream.region,
        "eventSourceARN": stream.arn,
    })
}

/// Seconds since the epoch with the millisecond precision Kinesis keeps.
fn epoch_seconds(at: &DateTime) -> f64 {
    let millis = at.secs() as f64 * 1000.0 + f64::from(at.subsec_nanos() / 1_000_000);
    millis / 1000.0
}

/// When Kinesis accepted the record, else now.
pub fn created_at(record: &aws_sdk_kinesis::types::Record) -> SystemTime {
    let Some(at) = record.approximate_arrival_timestamp() else { return SystemTime::now() };
    match u64::try_from(at.secs()) {
        Ok(secs) => UNIX_EPOCH + Duration::new(secs, at.subsec_nanos()),
        Err(_) => SystemTime::now(),
    }
}

/// `{"Records": [...]}`, as Lambda delivers Kinesis events. Items of a
/// partial batch response name records by `kinesis.sequenceNumber`, which is
/// also the record's id.
#[derive(Debug, Clone, Copy, Default)]
pub struct KinesisEnvelope;

/// The record's payload inside Lambda's shape: `kinesis.data`, base64.
/// Filters and transforms see it decoded as a top-level `data`, the key
/// Lambda's Kinesis filters name.
const DATA: PayloadField = PayloadField::base64("data").inside("kinesis");

impl Envelope for KinesisEnvelope {
    fn write_event(&self, records: &[&Value], out: &mut Vec<u8>) {
        switchyard_sdk::write_records(out, records);
    }

    fn payload_fields(&self, _record: &Value) -> &'static [PayloadField] {
        const FIELDS: &[PayloadField] = &[DATA];
        FIELDS
    }

    /// `KinesisBatchInfo`: `shardId, startSequenceNumber, endSequenceNumber,
    /// approximateArrivalOfFirstRecord, approximateArrivalOfLastRecord,
    /// batchSize, streamArn`, as Lambda's on-failure record carries it.
    fn batch_info(&self, records: &[&Value]) -> Option<(&'static str, Value)> {
        let (first, last) = (records.first()?, records.last()?);
        let shard = first["eventID"].as_str().and_then(|id| id.split_once(':')).map(|(shard, _)| shard);
        let arrival = |record: &Value| record["kinesis"]["approximateArrivalTimestamp"].as_f64().map(iso_millis);
        Some((
            "KinesisBatchInfo",
            json!({
                "shardId": shard,
                "startSequenceNumber": first["kinesis"]["sequenceNumber"],
                "endSequenceNumber": last["kinesis"]["sequenceNumber"],
                "approximateArrivalOfFirstRecord": arrival(first),
                "approximateArrivalOfLastRecord": arrival(last),
                "batchSize": records.len(),
                "streamArn": first["eventSourceARN"],
            }),
        ))
    }
}

/// `2019-11-14T00:38:04.835Z` from epoch seconds.
fn iso_millis(seconds: f64) -> String {
    let millis = (seconds * 1000.0).round() as i64;
    Utc.timestamp_millis_opt(millis)
        .single()
        .map(|at| at.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use aws_sdk_kinesis::primitives::Blob;

    use super::*;

    fn stream() -> StreamInfo {
        StreamInfo::from_arn("lambda-stream", "arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream", "x")
    }

    /// The first record of Lambda's documented example event, rebuilt.
    fn documented() -> aws_sdk_kinesis::types::Record {
        aws_sdk_kinesis::types::Record::builder()
            .partition_key("1")
            .sequence_number("49590338271490256608559692538361571095921575989136588898")
            .data(Blob::new("Hello, this is a test."))
            .approximate_arrival_timestamp(DateTime::from_millis(1_545_084_650_987))
            .build()
            .expect("all required fields are set")
    }

    #[test]
    fn record_matches_lambdas_documented_example() {
        let data = record_data(&documented(), "shardId-000000000006", &stream());
        assert_eq!(
            data,
            json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": "1",
                    "sequenceNumber": "49590338271490256608559692538361571095921575989136588898",
                    "data": "SGVsbG8sIHRoaXMgaXMgYSB0ZXN0Lg==",
                    "approximateArrivalTimestamp": 1545084650.987
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": "shardId-000000000006:49590338271490256608559692538361571095921575989136588898",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/switchyard",
                "awsRegion": "us-east-2",
                "eventSourceARN": "arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream"
            })
        );
        assert_eq!(created_at(&documented()), UNIX_EPOCH + Duration::from_millis(1_545_084_650_987));
    }

    #[test]
    fn batch_info_names_the_shard_and_range() {
        let first = record_data(&documented(), "shardId-000000000006", &stream());
        let mut last = first.clone();
        last["kinesis"]["sequenceNumber"] = json!("49590338271490256608559692540925702759324208523137515618");
        last["kinesis"]["approximateArrivalTimestamp"] = json!(1545084711.166);
        let (key, info) = KinesisEnvelope.batch_info(&[&first, &last]).expect("a batch info");
        assert_eq!(key, "KinesisBatchInfo");
        assert_eq!(
            info,
            json!({
                "shardId": "shardId-000000000006",
                "startSequenceNumber": "49590338271490256608559692538361571095921575989136588898",
                "endSequenceNumber": "49590338271490256608559692540925702759324208523137515618",
                "approximateArrivalOfFirstRecord": "2018-12-17T22:10:50.987Z",
                "approximateArrivalOfLastRecord": "2018-12-17T22:11:51.166Z",
                "batchSize": 2,
                "streamArn": "arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream"
            })
        );
        assert!(KinesisEnvelope.batch_info(&[]).is_none());
    }

    #[test]
    fn event_wraps_records_and_items_are_sequence_numbers() {
        let record = record_data(&documented(), "shardId-000000000006", &stream());
        assert_eq!(KinesisEnvelope.event(&[&record]), json!({"Records": [record]}));
        assert_eq!(KinesisEnvelope.item_id(&json!("4959")).as_deref(), Some("4959"));
        assert_eq!(KinesisEnvelope.item_id(&json!("")), None);
        assert_eq!(KinesisEnvelope.item_id(&json!(4959)), None);
    }

    #[test]
    fn partitions_follow_the_region() {
        let china = StreamInfo::from_arn("s", "arn:aws-cn:kinesis:cn-north-1:1:stream/s", "x");
        assert_eq!(china.invoke_identity_arn(), "arn:aws-cn:iam::1:role/switchyard");
        assert_eq!(china.region, "cn-north-1");
    }
}
