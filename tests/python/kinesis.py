"""Kinesis stream operations for the tests, with boto3 against the test's Kinesis server.

    kinesis.py ENDPOINT create NAME SHARDS          -> {"arn"}, once the stream is ACTIVE
    kinesis.py ENDPOINT put NAME '[["key", "data"], ...]'  -> [{"shard", "sequence"}, ...]
    kinesis.py ENDPOINT read NAME                   -> ["data", ...], every shard from its start
"""

import json
import sys
import time

import boto3

endpoint, command, args = sys.argv[1], sys.argv[2], sys.argv[3:]
kinesis = boto3.client(
    "kinesis",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="test",
    aws_secret_access_key="test",
)

if command == "create":
    kinesis.create_stream(StreamName=args[0], ShardCount=int(args[1]))
    for _ in range(100):
        summary = kinesis.describe_stream_summary(StreamName=args[0])["StreamDescriptionSummary"]
        if summary["StreamStatus"] == "ACTIVE":
            break
        time.sleep(0.1)
    print(json.dumps({"arn": summary["StreamARN"]}))
elif command == "put":
    out = []
    for key, data in json.loads(args[1]):
        r = kinesis.put_record(StreamName=args[0], PartitionKey=key, Data=data.encode())
        out.append({"shard": r["ShardId"], "sequence": r["SequenceNumber"]})
    print(json.dumps(out))
elif command == "read":
    out = []
    for shard in kinesis.list_shards(StreamName=args[0])["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=args[0], ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            got = kinesis.get_records(ShardIterator=iterator, Limit=1000)
            out.extend(r["Data"].decode() for r in got["Records"])
            if not got["Records"]:
                break
            iterator = got.get("NextShardIterator")
    print(json.dumps(out))
else:
    sys.exit("unknown command " + command)
