"""A survey mirror too big for one invocation continues in follow-up runs (issue 12), in-process.

The real function path (`run_flow_run` with a Lambda-like context: its SIGALRM deadline and the
run's budget) runs deployment runs of `mirror-survey` under the session harness, against a
trickled loopback upstream and a local store. Each follow-up is a real flow run that the partial
run created through Prefect; the test runs it the way the pool's next invocation would.
"""

from __future__ import annotations

import functools
import itertools
import re
import uuid

import pytest
from lambda_context import FakeContext

from flows.devkit.upstream_server import GeneratedFile, UpstreamServer
from flows.io.store import LocalStore
from flows.runtime.flow_run import run_flow_run

MARGIN = 2.5  # DEADLINE_MARGIN_SECONDS, scaled down
KIB = 1024
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def _wait_until_due(run) -> None:
    """What the pool's worker does: submit a run when it is due (Prefect would hold an early
    start in Pending until then, inside the invocation's time)."""
    import time
    from datetime import UTC, datetime

    time.sleep(max(0.0, (run.expected_start_time - datetime.now(UTC)).total_seconds()))


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _deploy_mirror(parameters: dict) -> uuid.UUID:
    with _client() as client:
        flow_id = client.create_flow_from_name("mirror-survey")
        deployment_id = client.create_deployment(
            flow_id=flow_id, name=f"mirror-{uuid.uuid4().hex[:8]}", entrypoint="flows/ingest.py:mirror_survey"
        )
        return client.create_flow_run_from_deployment(deployment_id, parameters=parameters).id


def _env(monkeypatch, upstream: UpstreamServer, store_dir, margin: float) -> LocalStore:
    monkeypatch.setenv("QUEST_STORE", str(store_dir))
    monkeypatch.setenv("QUEST_CONTACT", "tests@example.com")
    monkeypatch.setenv("QUEST_BLS_BASE_URL", upstream.bls_base_url)
    monkeypatch.setenv("QUEST_CONCURRENCY", "2")
    monkeypatch.setenv("QUEST_RETRIES", "0")
    monkeypatch.setenv("QUEST_CONTINUATION_MARGIN_SECONDS", str(margin))
    return LocalStore(store_dir)


@pytest.mark.parametrize("batched", [False, True], ids=["a-task-run-per-file", "small-files-batched"])
def test_a_survey_too_big_for_one_run_completes_over_follow_up_runs(
    prefect_harness, monkeypatch, tmp_path, batched
):
    # 10 files of 256 KiB at 128 KiB/s each, two at a time: ~10 s of transfers for runs of 8 s.
    # Batched: the same files 3 to a task run (as a plan of many small files has them), so the hard
    # stop falls inside batches and the files a batch did not reach go to the follow-up.
    files = {f"pr.part.{i:02d}": GeneratedFile(256 * KIB, seed=i) for i in range(10)}
    if batched:
        from flows import ingest
        from flows.core import plan

        units = functools.partial(plan.transfer_units, batch_files=3, batch_above=2)
        monkeypatch.setattr(ingest, "transfer_units", units)
    with UpstreamServer({"pr": files}, require_contact=True) as upstream:
        upstream.trickle("*/pr.part.*", bytes_per_second=128 * KIB)
        store = _env(monkeypatch, upstream, tmp_path / "data", margin=4)
        store.put_bytes("bls/pr/pr.gone", b"no longer listed")  # deleted only by the completing run
        parameters = {
            "survey": "pr",
            "dry_run": False,
            "allow_mass_delete": True,
            "snapshot_population": False,
        }
        run_id = _deploy_mirror(parameters)
        chain = []
        for _ in itertools.count():
            assert len(chain) < 8, chain
            result = run_flow_run(str(run_id), context=FakeContext(MARGIN + 8), margin_seconds=MARGIN)
            with _client() as client:
                run = client.read_flow_run(run_id)
            chain.append((run.state.type.value, run.state.message))
            assert run.state.type.value == "COMPLETED", (run.state, result)
            match = re.fullmatch(
                rf"partial: (\d+) of (\d+) files; continues in run .+? \(({UUID_RE})\)",
                run.state.message or "",
            )
            if match is None:
                break
            assert int(match[1]) >= 1
            assert store.head("bls/pr/pr.gone") is not None  # a partial run deletes nothing
            follow_up = uuid.UUID(match[3])
            with _client() as client:
                child = client.read_flow_run(follow_up)
                link = client.read_task_run(child.parent_task_run_id)
            # The follow-up: same deployment, same parameters, a child of the partial run, SCHEDULED;
            # created when the time was up (not in the last seconds), for the end of the run's time.
            assert child.deployment_id == run.deployment_id and child.parameters == parameters
            assert link.flow_run_id == run_id and child.state.type.value == "SCHEDULED"
            if len(chain) == 1:  # ~10 s of transfers in 8 s: files were still waiting when time was up
                assert (child.expected_start_time - child.created).total_seconds() > 1.5, child
            _wait_until_due(child)
            run_id = follow_up
    assert len(chain) >= 2, chain  # it did continue
    totals = [int(re.match(r"partial: \d+ of (\d+)", m)[1]) for _, m in chain[:-1]]
    assert totals == sorted(totals, reverse=True) and totals[0] == 10  # each plan skips what is done
    assert store.head("bls/pr/pr.gone") is None
    assert store.list_keys("bls/pr/") == sorted(f"bls/pr/{n}" for n in files)
    for name, body in files.items():
        assert store.read_bytes(f"bls/pr/{name}") == b"".join(body.iter_chunks())


def test_a_file_no_run_can_move_fails_naming_it_its_size_and_the_knob(prefect_harness, monkeypatch, tmp_path):
    # 3 MiB at 256 KiB/s needs ~12 s; a run has 6 s.
    with UpstreamServer(
        {"pr": {"pr.huge": GeneratedFile(3 * 1024 * KIB, seed=1)}}, require_contact=True
    ) as upstream:
        upstream.trickle("*/pr.huge", bytes_per_second=256 * KIB)
        store = _env(monkeypatch, upstream, tmp_path / "data", margin=4)
        run_id = _deploy_mirror({"survey": "pr"})
        states = []
        for _ in range(3):  # the first run may leave it "not done yet" before it measured a rate
            run_flow_run(str(run_id), context=FakeContext(MARGIN + 6), margin_seconds=MARGIN)
            with _client() as client:
                run = client.read_flow_run(run_id)
            states.append(run.state)
            match = re.search(rf"continues in run .+? \(({UUID_RE})\)", run.state.message or "")
            if match is None:
                break
            run_id = uuid.UUID(match[1])
            with _client() as client:
                _wait_until_due(client.read_flow_run(run_id))
    final = states[-1]
    assert final.type.value == "FAILED", states
    assert "pr.huge (3145728 bytes)" in final.message and "timeout" in final.message, final.message
    assert store.head("bls/pr/pr.huge") is None


@pytest.mark.parametrize("seconds", [None])
def test_without_a_budget_nothing_changes(prefect_harness, monkeypatch, tmp_path, seconds):
    from flows.ingest import mirror_survey

    files = {f"pr.part.{i}": GeneratedFile(64 * KIB, seed=i) for i in range(4)}
    with UpstreamServer({"pr": files}, require_contact=True) as upstream:
        store = _env(monkeypatch, upstream, tmp_path / "data", margin=3600)
        summary = mirror_survey("pr")
    assert not summary.partial and sorted(summary.added) == sorted(files)
    assert store.list_keys("bls/pr/") == sorted(f"bls/pr/{n}" for n in files)
