"""SIGINT and SIGTERM at the command line: stop the run within seconds, cleanly.

Both signals raise `Stopped` (a KeyboardInterrupt) in the main thread, which is where the flow
waits for its transfers. The mirror then aborts its in-flight downloads (`flows.ingest`), each
store write aborts (no half-published object, multipart uploads aborted), and Prefect records the
run as Crashed instead of leaving it Running. During a flow run Prefect installs its own SIGTERM
bridge (TerminationSignal, the same unwinding); after it has marked the run it re-sends the signal
to the handler installed here, so the command still ends with one line and exit status 128 + N.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """The process was asked to stop by a signal; `exit_status` is the shell's 128 + N."""

    def __init__(self, signum: int):
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.signal_name}")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGINT/SIGTERM into `Stopped` while the block runs (main thread only; restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
