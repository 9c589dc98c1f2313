"""SQS queue operations for the tests, with boto3 against the test's SQS server.

    sqs.py ENDPOINT create NAME [DLQ_ARN MAX_RECEIVE]   -> {"url", "arn"}
    sqs.py ENDPOINT send URL '["body", ...]'             -> ["message id", ...]
    sqs.py ENDPOINT drain URL                            -> [{"body", "receiveCount"}, ...]
    sqs.py ENDPOINT count URL                            -> visible + in flight
"""

import json
import sys

import boto3

endpoint, command, args = sys.argv[1], sys.argv[2], sys.argv[3:]
sqs = boto3.client(
    "sqs",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="test",
    aws_secret_access_key="test",
)

if command == "create":
    attributes = {}
    if len(args) > 1:
        attributes["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": args[1], "maxReceiveCount": args[2]})
    url = sqs.create_queue(QueueName=args[0], Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    print(json.dumps({"url": url, "arn": arn}))
elif command == "send":
    ids = [sqs.send_message(QueueUrl=args[0], MessageBody=body)["MessageId"] for body in json.loads(args[1])]
    print(json.dumps(ids))
elif command == "drain":
    out = []
    while True:
        got = sqs.receive_message(
            QueueUrl=args[0], MaxNumberOfMessages=10, WaitTimeSeconds=0, AttributeNames=["ApproximateReceiveCount"]
        ).get("Messages", [])
        if not got:
            break
        for m in got:
            out.append({"body": m["Body"], "receiveCount": int(m["Attributes"]["ApproximateReceiveCount"])})
            sqs.delete_message(QueueUrl=args[0], ReceiptHandle=m["ReceiptHandle"])
    print(json.dumps(out))
elif command == "count":
    a = sqs.get_queue_attributes(
        QueueUrl=args[0], AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    print(int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"]))
else:
    sys.exit("unknown command " + command)
