"""A benchmark's helper process (moto, the loopback upstream): one JSON line answered per command.

Servers run in their own processes so they do not share the measured process's GIL.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol


class Child:
    """`script` run with `args`; its first stdout line (an address) is `first_line`."""

    def __init__(self, script: str, *args: str, quiet: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if quiet else None,
            text=True,
            cwd=Path(script).resolve().parents[1],
        )
        assert self.proc.stdout is not None
        self.first_line = self.proc.stdout.readline().strip()
        if not self.first_line:
            raise RuntimeError(f"child {script} {' '.join(args)} did not start")

    def ask(self, command: str) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class _Logged(Protocol):
    def clear_log(self) -> None: ...


def answer_counts(up: _Logged, counts: Callable[[], object]) -> None:
    """The child's side of `Child.ask` for a loopback upstream: `clear` empties its request log,
    `counts` sends `counts()` as JSON; until stdin closes."""
    for line in sys.stdin:
        if line.strip() == "clear":
            up.clear_log()
            print("{}", flush=True)
        elif line.strip() == "counts":
            print(json.dumps(counts()), flush=True)
