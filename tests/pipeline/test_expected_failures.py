"""Expected failures read as one line on the run's page (issue 13): Failed, one message, no
traceback, logged once, read back from the Prefect API after real runs; an unexpected error keeps
its traceback. The filter itself is checked on plain log records."""

from __future__ import annotations

import logging
import sys
import time

import pytest
from reports_data import seed_store

from flows.core.errors import ListingError, MissingInput, QuestError
from flows.expected import ExpectedFailureFilter, ends_failed_on_expected
from flows.io.store import LocalStore


@pytest.fixture
def local_store(tmp_path, monkeypatch):
    monkeypatch.setenv("QUEST_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("QUEST_RETRY_DELAY_SECONDS", "0")
    return LocalStore(tmp_path / "store")


def _logs(flow_run_id) -> list[str]:
    """Every log entry of the run and of its task runs, once the API has them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline, seen = time.monotonic() + 10, -1
    while True:  # logs reach the API in batches
        with get_client(sync_client=True) as client:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        if (len(logs) == seen and logs) or time.monotonic() > deadline:
            return [log.message for log in logs]
        seen = len(logs)
        time.sleep(1.0)


def test_a_missing_population_key_is_one_line_naming_the_newest_snapshots(prefect_harness, local_store):
    from flows.reports import reports

    for ts in ("20240101T000000Z", "20250101T000000Z", "20250601T000000Z", "20250701T000000Z"):
        seed_store(local_store, ts=ts)
    state = reports(population_key="population/20200101T000000Z.json", return_state=True)
    assert state.is_failed()
    message = state.message
    assert "population/20200101T000000Z.json is not in the store" in message and "\n" not in message
    assert message.endswith(
        "the newest snapshots: population/20250701T000000Z.json, population/20250601T000000Z.json, "
        "population/20250101T000000Z.json"
    ), message
    logs = _logs(state.state_details.flow_run_id)
    assert [m for m in logs if "20200101T000000Z" in m] == [message], logs
    assert not [m for m in logs if "Traceback" in m], logs
    assert local_store.list_keys("reports/") == []


def test_an_ingest_refused_by_its_upstream_is_one_line(prefect_harness, local_store, monkeypatch):
    from flows.devkit.upstream_server import UpstreamServer
    from flows.ingest import ingest

    with UpstreamServer({"pr": {"pr.a": b"a"}}, require_contact=True) as upstream:
        monkeypatch.setenv("QUEST_BLS_BASE_URL", upstream.bls_base_url)
        monkeypatch.setenv("QUEST_CONTACT", "tests@example.com")
        monkeypatch.setenv("QUEST_RETRIES", "0")
        upstream.set_root_listing_mode("empty")
        state = ingest(["all"], return_state=True)
        with pytest.raises(ListingError):  # an in-process caller still gets the exception
            state.result()
    assert state.is_failed() and "names no survey folders" in state.message
    logs = _logs(state.state_details.flow_run_id)
    assert len([m for m in logs if "names no survey folders" in m]) == 1, logs
    assert not [m for m in logs if "Traceback" in m], logs


def test_an_unexpected_error_keeps_its_traceback(prefect_harness):
    from prefect import flow

    @flow(name="bug")
    @ends_failed_on_expected
    def bug() -> None:
        raise KeyError("a bug")

    state = bug(return_state=True)
    assert state.is_failed()
    logs = _logs(state.state_details.flow_run_id)
    assert [m for m in logs if "Traceback" in m and "KeyError" in m], logs


def _record(message: str, exc: BaseException | None = None, level: int = logging.ERROR) -> logging.LogRecord:
    exc_info = None
    if exc is not None:
        try:
            raise exc
        except BaseException:
            exc_info = sys.exc_info()
    return logging.LogRecord("prefect.task_runs", level, __file__, 1, message, None, exc_info)


def test_the_filter_drops_only_prefects_duplicates_of_expected_failures():
    keep = ExpectedFailureFilter().filter
    assert not keep(_record("Task run failed with exception: ...", MissingInput("gone")))
    assert keep(_record("Task run failed with exception: ...", KeyError("bug")))
    assert not keep(
        _record("Finished in state Failed('Task run encountered an exception MissingInput: gone')")
    )
    assert not keep(
        _record("Finished in state Failed('Flow run encountered an exception: ListingError: cut')")
    )
    assert keep(_record("Finished in state Failed('Flow run encountered an exception: KeyError: 'x'')"))
    assert keep(_record("Finished in state Completed()", level=logging.INFO))
    assert keep(_record("an ordinary line about MissingInput: nothing wrong", level=logging.INFO))
    assert issubclass(MissingInput, QuestError)
