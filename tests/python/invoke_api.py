"""Lambda Invoke API conformance, checked with boto3 (the AWS SDK for Python).

Run by tests/invoke_api.rs against a running Switchyard:
    python3 invoke_api.py ENDPOINT_URL
The Switchyard config has a function `echo` (answers the event back) and a
function `broken` (always fails).
"""

import json
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint = sys.argv[1]
client = boto3.client(
    "lambda",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="test",
    aws_secret_access_key="test",
    config=Config(retries={"max_attempts": 1}),
)


def expect_error(code, status, **kwargs):
    try:
        client.invoke(**kwargs)
    except ClientError as e:
        got = e.response["Error"]["Code"]
        assert got == code, f"expected {code}, got {got}: {e.response}"
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == status, e.response
        return
    raise AssertionError(f"expected {code} for {kwargs.get('FunctionName')}")


# RequestResponse: 200 and the function's payload.
r = client.invoke(FunctionName="echo", Payload=json.dumps({"hello": "world"}))
assert r["StatusCode"] == 200, r
assert "FunctionError" not in r, r
assert json.loads(r["Payload"].read()) == {"hello": "world"}
assert r["ExecutedVersion"] == "$LATEST", r

# By ARN, as the SDKs allow.
r = client.invoke(
    FunctionName="arn:aws:lambda:us-east-1:000000000000:function:echo",
    Payload=b'{"n": 1}',
)
assert json.loads(r["Payload"].read()) == {"n": 1}

# A function error: still 200, with FunctionError and Lambda's error body.
r = client.invoke(FunctionName="broken", Payload=b"{}")
assert r["StatusCode"] == 200, r
assert r["FunctionError"] == "Unhandled", r
error = json.loads(r["Payload"].read())
assert error["errorType"] == "Kaput", error
assert error["errorMessage"] == "always broken", error

# DryRun: 204, nothing invoked.
r = client.invoke(FunctionName="echo", InvocationType="DryRun", Payload=b"{}")
assert r["StatusCode"] == 204, r

# Event: 202 once durably queued.
r = client.invoke(FunctionName="echo", InvocationType="Event", Payload=json.dumps({"async": True}))
assert r["StatusCode"] == 202, r
assert r["ResponseMetadata"]["HTTPHeaders"].get("x-amzn-requestid"), r

# Errors in AWS's shape, parsed by botocore into error codes.
expect_error("ResourceNotFoundException", 404, FunctionName="nope", Payload=b"{}")
# A version or alias, in the name or as Qualifier: only $LATEST exists.
expect_error("ResourceNotFoundException", 404, FunctionName="echo:prod", Payload=b"{}")
expect_error("ResourceNotFoundException", 404, FunctionName="echo", Qualifier="7", Payload=b"{}")
r = client.invoke(FunctionName="echo:$LATEST", Payload=b"{}")
assert r["StatusCode"] == 200, r
expect_error("InvalidRequestContentException", 400, FunctionName="echo", Payload=b"{not json")
expect_error("RequestTooLargeException", 413, FunctionName="echo", Payload=b'"' + b"x" * (6 * 1024 * 1024) + b'"')
expect_error(
    "RequestTooLargeException", 413, FunctionName="echo", InvocationType="Event", Payload=b'"' + b"x" * (1024 * 1024) + b'"'
)

print("invoke api: all checks passed")
