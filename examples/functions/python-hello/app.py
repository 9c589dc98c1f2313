"""Switchyard example: a plain Python Lambda handler, run by awslambdaric.

The event's "action" picks what it does, so tests can drive every path a
Lambda function can take: answer, print, fail, hang, crash, grow.
"""

import os
import sys
import time

# Written during init: shows up before START in a cold start's log.
print("python-hello: init", flush=True)

LAMBDA_VARIABLES = [
    "AWS_LAMBDA_RUNTIME_API",
    "_HANDLER",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_EXECUTION_ENV",
    "TZ",
    "TMPDIR",
    "PATH",
    "LOG_LEVEL",
    "HOME",
]


def handler(event, context):
    action = event.get("action", "echo") if isinstance(event, dict) else "echo"

    if action == "echo":
        return {
            "event": event,
            "pid": os.getpid(),
            "request_id": context.aws_request_id,
            "log_stream": context.log_stream_name,
            "function_arn": context.invoked_function_arn,
        }
    if action == "upper":
        return {"text": event["text"].upper()}
    if action == "print":
        for line in event["lines"]:
            print(line)
        return {"printed": len(event["lines"])}
    if action == "raise":
        raise ValueError(event.get("message", "asked to raise"))
    if action == "sleep":
        time.sleep(event["seconds"])
        return {"slept": event["seconds"], "pid": os.getpid()}
    if action == "alloc":
        # Written, not just reserved, so the memory is really used.
        hog = b"\x01" * (event["mb"] * 1024 * 1024)
        return {"allocated_mb": len(hog) // (1024 * 1024)}
    if action == "exit":
        sys.stdout.flush()
        os._exit(event.get("code", 1))
    if action == "env":
        tmpdir = os.environ.get("TMPDIR", "")
        probe = os.path.join(tmpdir, "probe")
        with open(probe, "w") as f:
            f.write("ok")
        return {
            "env": {name: os.environ.get(name) for name in LAMBDA_VARIABLES},
            "cwd": os.getcwd(),
            "argv": sys.argv,
            "tmp_writable": os.path.exists(probe),
        }
    if action == "context":
        client = context.client_context
        return {
            "trace_id": os.environ.get("_X_AMZN_TRACE_ID"),
            "client_custom": getattr(client, "custom", None) if client else None,
            "remaining_ms": context.get_remaining_time_in_millis(),
            "memory_limit_in_mb": context.memory_limit_in_mb,
        }
    if action == "big":
        return "x" * event["bytes"]
    raise ValueError("unknown action %r" % action)
