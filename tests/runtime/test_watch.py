"""The cancel watcher and the Prefect 3.8.8 internals it and the deadline rely on.

Each `test_prefect_*` pins one behaviour of Prefect that flows/runtime/watch.py and
flows/runtime/flow_run.py use; when a Prefect upgrade changes it, the test says which.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid

import pytest
from prefect import flow

from flows.runtime.watch import CancelWatch, Invocation, request_cancel, sigalrm_timeout_available


class _Context:
    aws_request_id = "req-ctx"
    log_group_name = "/aws/lambda/f"
    log_stream_name = "s"

    def get_remaining_time_in_millis(self) -> int:
        return 12_345


def test_invocation_from_lambdas_context():
    inv = Invocation.from_context(_Context(), {})
    assert inv.request_id == "req-ctx" and inv.log_group == "/aws/lambda/f" and inv.limit == 13
    assert 12.0 < inv.remaining() <= 12.345
    assert Invocation.from_context(_Context(), {"QUEST_FUNCTION_TIMEOUT_SECONDS": "600"}).limit == 600
    local = Invocation.from_context(None)
    assert local.request_id is None and local.remaining() is None


def test_prefect_private_names_still_exist():
    from prefect._internal import attempt_control, control_listener
    from prefect.utilities import engine

    assert "cancel" in attempt_control.Intent.__args__
    for name in ("_set_intent", "clear_intent", "get_intent"):
        assert callable(getattr(control_listener, name))
    assert callable(engine.commit_control_intent_and_ack) and callable(engine.capture_sigterm)
    assert hasattr(engine._prefect_sigterm_bridge_lock, "acquire")
    assert isinstance(engine._prefect_sigterm_handler_depth, int)


def test_no_cancel_is_sent_without_prefects_bridge():
    """Outside a run (no SIGTERM bridge) the watcher cannot signal: the process would die."""
    from prefect._internal import control_listener

    assert request_cancel() is False
    assert control_listener.get_intent() is None
    assert request_cancel(lambda: False) is False


def test_prefect_bridge_turns_our_sigterm_into_a_cancel_intent():
    """Inside `capture_sigterm`, `request_cancel` raises Prefect's TerminationSignal in the main
    thread with the `cancel` intent committed (what the engine reads to call handle_cancellation)."""
    from prefect._internal import control_listener
    from prefect.exceptions import TerminationSignal
    from prefect.utilities.engine import capture_sigterm

    before = signal.getsignal(signal.SIGTERM)
    seen = None
    try:
        with pytest.raises(TerminationSignal), capture_sigterm():
            threading.Thread(target=request_cancel).start()
            time.sleep(5)
        seen = control_listener.get_intent()
    finally:
        control_listener.clear_intent()
        signal.signal(signal.SIGTERM, before)
    assert seen == "cancel"


def test_prefect_engine_ends_a_cancel_intent_cancelled(prefect_harness):
    """The engine's `except TerminationSignal` dispatch: a `cancel` intent → Cancelled, not Crashed."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import TerminationSignal

    run_ids = []

    @flow(name="pin-cancel")
    def pinned() -> None:
        from prefect.runtime import flow_run

        run_ids.append(flow_run.id)
        threading.Thread(target=request_cancel).start()
        time.sleep(10)

    before = signal.getsignal(signal.SIGTERM)
    watch = CancelWatch(uuid.uuid4(), check_seconds=3600)
    watch.cancel_sent = True  # what restores the handler and clears the intent afterwards
    watch.start()
    try:
        with pytest.raises(TerminationSignal):
            pinned()
    finally:
        watch.close()
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(uuid.UUID(run_ids[0])).state
    assert state.type.value == "CANCELLED", state
    assert signal.getsignal(signal.SIGTERM) is before


def test_prefect_flow_timeout_interrupts_blocking_waits_and_fails_timedout(prefect_harness):
    """In the main thread Prefect's flow timeout is SIGALRM: a lock wait is interrupted, and the run
    ends Failed named "TimedOut" (flow_run.py turns that into Crashed naming Lambda's limit)."""
    assert sigalrm_timeout_available()

    @flow(name="pin-timeout", timeout_seconds=1)
    def waits() -> None:
        threading.Event().wait(30)

    started = time.monotonic()
    state = waits(return_state=True)
    assert time.monotonic() - started < 5
    assert state.type.value == "FAILED" and state.name == "TimedOut", state
    assert "exceeded timeout of 1.0 second" in state.message


def test_prefect_heartbeats_follow_the_setting():
    """The engine beats when PREFECT_FLOWS_HEARTBEAT_FREQUENCY is set (30 s is Prefect's minimum)."""
    from prefect.flow_engine import MINIMUM_HEARTBEAT_INTERVAL, FlowRunEngine
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows.core.names import HEARTBEAT_FREQUENCY_SECONDS

    assert HEARTBEAT_FREQUENCY_SECONDS >= MINIMUM_HEARTBEAT_INTERVAL

    @flow
    def f() -> None:
        pass

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: HEARTBEAT_FREQUENCY_SECONDS}):
        assert FlowRunEngine(flow=f).heartbeat_seconds == HEARTBEAT_FREQUENCY_SECONDS


def test_the_watcher_stops_with_the_run_and_survives_api_errors(monkeypatch):
    from prefect.client.orchestration import SyncPrefectClient

    calls = []

    def broken(self, flow_run_id):
        calls.append(flow_run_id)
        raise ConnectionError("no API")

    monkeypatch.setattr(SyncPrefectClient, "read_flow_run", broken)
    watch = CancelWatch(uuid.uuid4(), check_seconds=0.05)
    with watch:
        time.sleep(0.5)
    assert len(calls) >= 3 and watch.api_errors == len(calls) and not watch.cancel_sent
    assert not watch._thread.is_alive()
