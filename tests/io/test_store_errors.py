"""Issue 9 (class 6): expected S3 failures are one-line `StoreError`s on every store operation."""

from __future__ import annotations

import socket

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from flows.core.errors import QuestError, StoreError
from flows.io.store import S3Store, describe_s3_error

MIB = 1024 * 1024


def operations(store: S3Store) -> dict[str, object]:
    big = b"x" * (6 * MIB)
    return {
        "list": lambda: store.list_keys("bls/"),
        "head": lambda: store.head("bls/pr/a"),
        "read": lambda: store.read_bytes("bls/pr/a"),
        "open": lambda: store.open_read("bls/pr/a"),
        "put": lambda: store.put_bytes("bls/pr/a", b"1"),
        "put_stream": lambda: store.put_stream("bls/pr/a", iter([big]), expected_size=len(big)),
        "delete": lambda: store.delete("bls/pr/a"),
        "lease": lambda: store.lease("bls/pr/", 30, wait_seconds=0).acquire(),
        "cleanup": lambda: store.cleanup_stale("bls/pr/", 0),
    }


OPERATIONS = ["list", "head", "read", "open", "put", "put_stream", "delete", "lease", "cleanup"]


def assert_one_line(exc: BaseException, *needles: str) -> None:
    message = str(exc)
    assert isinstance(exc, StoreError) and isinstance(exc, QuestError)
    assert "\n" not in message and "Traceback" not in message
    for needle in needles:
        assert needle in message, message


@pytest.mark.parametrize("operation", OPERATIONS)
def test_missing_bucket(aws, operation):
    client = boto3.client("s3", region_name="us-east-1")
    store = S3Store("no-such-bucket", "root", client=client, multipart_threshold=5 * MIB, part_size=5 * MIB)
    with pytest.raises(StoreError) as info:
        operations(store)[operation]()
    assert_one_line(info.value, "no-such-bucket", "does not exist")


@pytest.mark.parametrize("operation", OPERATIONS)
def test_access_denied(s3_bucket, s3_client, operation):
    """The bucket policy/role refuses every request (moto enforces no IAM: botocore's own hook answers)."""

    def deny(model, **kwargs):
        raise ClientError(
            {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}, "ResponseMetadata": {}},
            model.name,
        )

    s3_client.meta.events.register("before-call.s3.*", deny)
    store = S3Store(s3_bucket, "root", client=s3_client, multipart_threshold=5 * MIB, part_size=5 * MIB)
    with pytest.raises(StoreError) as info:
        operations(store)[operation]()
    assert_one_line(info.value, "access denied", "AccessDenied")


@pytest.mark.parametrize("operation", OPERATIONS)
def test_unreachable_endpoint(operation, monkeypatch):
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    client = boto3.client(
        "s3",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{port}",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=1),
    )
    store = S3Store("quest-test", "root", client=client, multipart_threshold=5 * MIB, part_size=5 * MIB)
    with pytest.raises(StoreError) as info:
        operations(store)[operation]()
    assert_one_line(info.value, "cannot reach the S3 endpoint", f"127.0.0.1:{port}")


def test_missing_key_is_still_none_or_a_clear_error(s3_bucket, s3_client):
    store = S3Store(s3_bucket, client=s3_client)
    assert store.head("bls/pr/none") is None
    with pytest.raises(StoreError, match="no object s3://quest-test/bls/pr/none"):
        store.read_bytes("bls/pr/none")
    store.delete("bls/pr/none")  # deleting what is not there is not an error


def test_describe_s3_error_is_one_line_with_the_code():
    exc = ClientError({"Error": {"Code": "SlowDown", "Message": "Please\nreduce your rate"}}, "PutObject")
    assert describe_s3_error("put", "s3://b/k", exc) == "put s3://b/k: Please reduce your rate (SlowDown)"
    exc = ClientError({"Error": {}, "ResponseMetadata": {"HTTPStatusCode": 500}}, "HeadObject")
    assert describe_s3_error("head", "s3://b/k", exc) == "head s3://b/k: request failed (500)"
