"""Switchyard example: an SQS batch handler on AWS Lambda Powertools.

Records whose body is {"fail": true} raise; Powertools' BatchProcessor turns
them into the partial batch response, {"batchItemFailures": [...]}, naming
only those records, so the event source retries just them.
"""

import json

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord):
    body = json.loads(record.body) if record.body else {}
    print("processing %s" % record.message_id)
    if body.get("fail"):
        raise ValueError("record %s asked to fail" % record.message_id)
    return body


def handler(event, context):
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
