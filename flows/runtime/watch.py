"""What watches a flow run while the Lambda function runs it: its deadline and the cancel button.

- `Invocation`: the request id, log group/stream and deadline of the invocation (from Lambda's
  context; a local caller passes none and has no deadline).
- `CancelWatch`: a daemon thread that reads the run every `check_seconds`. When the run is
  CANCELLING it stops the run in-process the way Prefect's runner does (`request_cancel`): it
  commits a `cancel` control intent and sends this process SIGTERM while Prefect's SIGTERM bridge
  is installed, so the engine raises `TerminationSignal` in the flow's thread (interrupting
  blocking waits: the mirror aborts its transfers) and ends the run CANCELLED itself. The watcher
  stops with the run (`close`), cannot signal once closed, and never fails the run when the API
  cannot be reached.

Prefect internals used here (3.8.8; tests/runtime/test_watch.py pins each one):
`prefect.utilities.engine.commit_control_intent_and_ack` and `_prefect_sigterm_bridge_lock`,
`prefect._internal.control_listener._set_intent` / `clear_intent` / `get_intent`, and the engine's
`except TerminationSignal` dispatch to `handle_cancellation` for a `cancel` intent.
"""

from __future__ import annotations

import contextvars
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any
from uuid import UUID

from prefect._internal import control_listener
from prefect.exceptions import TerminationSignal
from prefect.utilities import engine as prefect_engine

from flows.core.invocation import limit_seconds
from flows.core.names import CANCEL_CHECK_SECONDS, ENV_FUNCTION_TIMEOUT_SECONDS

log = logging.getLogger(__name__)

# While a cancel was seen but Prefect's bridge is not installed yet (the engine is still
# starting), the watcher tries again this often instead of every check.
CANCEL_RETRY_SECONDS = 0.2
# The watcher's poll may be blocked in an HTTP request; `close` waits this long for it at most.
JOIN_SECONDS = 1.0

SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


@dataclass(frozen=True)
class Invocation:
    """The Lambda invocation running a flow run (all None/absent for a local caller)."""

    request_id: str | None = None
    log_group: str | None = None
    log_stream: str | None = None
    # time.monotonic() at which Lambda kills the invocation; None: no deadline.
    deadline: float | None = None
    # The limit to name in messages (the function's timeout, else the time left at start).
    limit: int | None = None

    @classmethod
    def from_context(cls, context: Any, environ: Mapping[str, str] | None = None) -> Invocation:
        if context is None:
            return cls()
        env = os.environ if environ is None else environ
        request_id = getattr(context, "aws_request_id", None)
        deadline = limit = None
        remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
        if callable(remaining_ms):
            remaining = float(remaining_ms()) / 1000.0
            deadline = time.monotonic() + remaining
            limit = limit_seconds(env.get(ENV_FUNCTION_TIMEOUT_SECONDS), remaining)
        return cls(
            request_id=str(request_id) if request_id else None,
            log_group=getattr(context, "log_group_name", None),
            log_stream=getattr(context, "log_stream_name", None),
            deadline=deadline,
            limit=limit,
        )

    def remaining(self) -> float | None:
        """Seconds until Lambda kills the invocation (None without a deadline)."""
        return None if self.deadline is None else self.deadline - time.monotonic()


# --------------------------------------------------------------------------- Prefect's bridge


def request_cancel(still_wanted: Callable[[], bool] = lambda: True) -> bool:
    """Stop this process's running flow run as cancelled; False when Prefect's SIGTERM bridge is
    not installed (the engine has not started the run yet, or has finished it).

    Prefect's runner does the same across processes: commit the `cancel` intent atomically with
    the check that the bridge is installed (under the lock `capture_sigterm` installs and restores
    it with), then send SIGTERM. The engine reads the intent and calls `handle_cancellation`
    (Cancelling → Cancelled) instead of `handle_crash`, and `capture_sigterm` does not re-raise
    the signal to the default handler (which would kill the process).
    """

    # Decided under Prefect's lock, with the bridge check: once the watch is closed (the run is
    # over), no intent is committed and no signal is sent.
    wanted: list[bool] = []

    def commit() -> None:
        wanted.append(still_wanted())
        if wanted[0]:
            control_listener._set_intent("cancel")

    def trigger() -> None:
        if wanted and wanted[0]:
            os.kill(os.getpid(), signal.SIGTERM)

    committed = prefect_engine.commit_control_intent_and_ack(
        commit_intent=commit,
        clear_intent=control_listener.clear_intent,
        send_ack=lambda: None,  # no supervising runner to acknowledge to
        trigger_cancel=trigger,
    )
    return committed and bool(wanted) and wanted[0]


def sigalrm_timeout_available() -> bool:
    """Whether Prefect's flow timeout can interrupt blocking work here.

    Prefect uses SIGALRM (which interrupts sleeps, lock and socket waits) only in the main thread
    and only when no other SIGALRM handler is installed; otherwise it falls back to raising in the
    thread from a watcher thread, which waits until the blocking call returns.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    return signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)


# --------------------------------------------------------------------------- the deadline


class LambdaTimeLimit(BaseException):
    """Lambda's deadline is near: the run stops now, as a crash, with a message naming the limit.

    A BaseException (like KeyboardInterrupt), not an Exception: no `except Exception` in a flow
    or in Prefect swallows it, Prefect's flow retries do not retry it, and the engine's crash
    handling ends the run CRASHED in one transition, its message carrying this one (Prefect's own
    flow timeout would first record Failed "TimedOut", which automations on Failed would see).
    """


@contextmanager
def deadline_alarm(seconds: float, message: str) -> Iterator[bool]:
    """Raise `LambdaTimeLimit(message)` in this (main) thread after `seconds`; yields False when
    SIGALRM is not ours to use here (not the main thread, or another handler is installed)."""
    if not sigalrm_timeout_available():
        yield False
        return

    def fire(signum: int, frame: object) -> None:
        raise LambdaTimeLimit(message)

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------- the watcher


class CancelWatch:
    """A daemon thread that stops the run in-process once it is CANCELLING (see the module doc)."""

    def __init__(
        self,
        run_id: UUID,
        check_seconds: float = CANCEL_CHECK_SECONDS,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        stop_run: Callable[[Callable[[], bool]], bool] = request_cancel,
    ) -> None:
        self.run_id = run_id
        self.check_seconds = check_seconds
        self.logger = logger or log
        self._stop_run = stop_run
        self._stop = threading.Event()
        self._open = True
        self.cancel_seen_at: float | None = None  # monotonic
        self.cancel_sent = False
        self.api_errors = 0
        self._saved_sigterm: SignalHandler = None
        self._main = threading.current_thread() is threading.main_thread()
        # The thread sees this context's Prefect settings (API URL): a bare thread would see the
        # process-wide defaults instead.
        self._thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._loop,),
            name=f"cancel-watch-{run_id}",
            daemon=True,
        )

    def __enter__(self) -> CancelWatch:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        control_listener.clear_intent()  # a warm process: nothing left from an earlier run
        if self._main:
            self._saved_sigterm = signal.getsignal(signal.SIGTERM)
        self._thread.start()

    def _still_open(self) -> bool:
        return self._open

    def _loop(self) -> None:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.objects import StateType

        wait = self.check_seconds
        try:
            client_cm = get_client(sync_client=True)
            with client_cm as client:
                while not self._stop.wait(wait):
                    try:
                        run = client.read_flow_run(self.run_id)
                    except Exception as exc:  # the API is away: never a reason to fail the run
                        self.api_errors += 1
                        if self.api_errors in (1, 10) or self.api_errors % 100 == 0:
                            self.logger.warning(
                                "cancel check %d failed (%s: %s); the run goes on",
                                self.api_errors,
                                type(exc).__name__,
                                exc,
                            )
                        continue
                    if run.state is None or run.state.type != StateType.CANCELLING:
                        continue
                    if self.cancel_seen_at is None:
                        self.cancel_seen_at = time.monotonic()
                        self.logger.info("the run was cancelled: stopping it")
                    if self._stop_run(self._still_open):
                        self.cancel_sent = True
                        return
                    wait = CANCEL_RETRY_SECONDS
        except Exception:  # pragma: no cover - a watcher bug must not end the invocation
            log.exception("the cancel watcher of flow run %s stopped", self.run_id)

    def close(self) -> None:
        """Stop watching; after this the watcher cannot signal. Restores SIGTERM's handler.

        Closing takes the lock Prefect's bridge is checked under, so a cancel is either sent
        before (its signal is absorbed here if it arrives late) or not at all. `capture_sigterm`
        leaves its bridge installed once a cancel intent was committed; the handler from before
        the run comes back here, and the intent is cleared for the next run of a warm process.
        """
        self._stop.set()
        while True:
            try:
                with prefect_engine._prefect_sigterm_bridge_lock:
                    self._open = False
                    if (
                        self._main
                        and prefect_engine._prefect_sigterm_handler_depth == 0
                        and prefect_engine.is_prefect_sigterm_handler_installed()
                    ):
                        saved = self._saved_sigterm
                        signal.signal(signal.SIGTERM, signal.SIG_DFL if saved is None else saved)
                break
            except TerminationSignal:
                if not self.cancel_sent:
                    raise
                # our own cancel's SIGTERM, landing after the run ended: nothing left to stop
        control_listener.clear_intent()
        self._thread.join(JOIN_SECONDS)
