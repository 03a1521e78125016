"""Tiny flows for the work-pool tests: they run inside the Lambda emulator like the real flows do.

`echo` returns what the run's environment carried (the worker's `env` job variables reach the
flow, the API key never does); `fail` fails inside the function (the run must end Failed).
"""

from __future__ import annotations

import os

from prefect import flow


@flow
def echo(names: list[str] | None = None) -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in names or []}


@flow
def fail(message: str = "failing on purpose") -> None:
    raise ValueError(message)


# --------------------------------------------------------------------------- fault probes
# For tests/e2e/test_lambda_faults.py: a run that outlives its time limit, is killed or cancelled,
# and one that counts how often its body executes.


@flow
def sleeper(seconds: float = 60.0, marker: str = "") -> str:
    """Sleep in the function; each second print `marker` on stdout: Lambda's log stream only (the
    run's page gets it only if something forwards the function's CloudWatch lines)."""
    import time

    end = time.monotonic() + seconds
    tick = 0
    while (left := end - time.monotonic()) > 0:
        if marker:
            print(f"{marker} tick {tick}", flush=True)
        tick += 1
        time.sleep(min(1.0, left))
    return "slept"


@flow
def count_execution(bucket: str, seconds: float = 3.0) -> str:
    """Record one execution of the body as its own S3 object `executions/<flow run id>/<uuid>`
    (the function's AWS_ENDPOINT_URL points at moto), then stay running for `seconds`."""
    import time
    import uuid

    import boto3
    from prefect.runtime import flow_run

    key = f"executions/{flow_run.id}/{uuid.uuid4().hex}"
    stream = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=stream.encode())
    time.sleep(seconds)
    return key


@flow
def busy_then_mark(bucket: str, n: int, seconds: float = 8.0) -> str:
    """Mark `before`, hold the GIL in one C call (`sum(range(n))`: no other thread of the process,
    the cancel watcher included, runs meanwhile), mark `after`, sleep `seconds`, mark `end`; the
    marks are S3 objects `marks/<flow run id>/<mark>`."""
    import time

    import boto3
    from prefect.runtime import flow_run

    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key=f"marks/{flow_run.id}/before", Body=b"")
    sum(range(n))
    s3.put_object(Bucket=bucket, Key=f"marks/{flow_run.id}/after", Body=b"")
    time.sleep(seconds)
    s3.put_object(Bucket=bucket, Key=f"marks/{flow_run.id}/end", Body=b"")
    return "done"
