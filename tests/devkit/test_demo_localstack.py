"""`quest demo --endpoint-url URL`: the demo on an S3 + SQS the user already runs (LocalStack here).

The demo wires a bucket and queues of its own there, runs the chain on LocalStack's real
notifications, and removes what it created; moto stays the default (tests/devkit/test_demo.py).
"""

from __future__ import annotations

import os

import pytest

from flows.cli import main

pytestmark = pytest.mark.slow


def demo_resources(backend) -> list[str]:
    buckets = [b["Name"] for b in backend.client("s3").list_buckets().get("Buckets", [])]
    queues = backend.client("sqs").list_queues(QueueNamePrefix="quest-demo-").get("QueueUrls", [])
    return [b for b in buckets if b.startswith("quest-demo-")] + queues


def test_quest_demo_on_localstack(localstack_backend, prefect_harness, tmp_path, capsys):
    before, env_before = demo_resources(localstack_backend), dict(os.environ)
    url = localstack_backend.endpoint_url
    assert main(["demo", "--output-dir", str(tmp_path), "--endpoint-url", url]) == 0
    out = capsys.readouterr().out
    assert f"S3 + SQS at {url} (yours): bucket quest-demo-" in out
    assert "PRS30006032 Q01: value per year with that year's US population" in out
    assert "snapshot PUT -> report objects:" in out
    [folder] = (tmp_path / "reports").iterdir()
    assert len(list(folder.iterdir())) == 6
    assert demo_resources(localstack_backend) == before  # its bucket and queues are gone again
    assert dict(os.environ) == env_before


def test_quest_demo_refuses_a_bad_endpoint_in_one_line(monkeypatch, capsys):
    with pytest.raises(SystemExit) as info:
        main(["demo", "--endpoint-url", "localhost:4566"])
    assert info.value.code == 2 and "--endpoint-url" in capsys.readouterr().err
    monkeypatch.setenv("QUEST_DEMO_ENDPOINT_URL", "ftp://127.0.0.1:4566")
    assert main(["demo"]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("quest demo: error: QUEST_DEMO_ENDPOINT_URL: ")
