"""Calls the function's handler once, in a process of its own, the way the zip runs it
(for tests/runtime/test_plain_deadline.py): `python zip_entry_probe.py EVENT_JSON SECONDS`.

- The zip ships prefect-client, whose `prefect.server` does not import (no database layer). Here
  every `prefect.server` import fails before anything is loaded, so `prefect_api_available()`
  decides as it does in Lambda, with nothing monkeypatched.
- The context has Lambda's shape, its deadline SECONDS after the handler is called. The modules
  are imported first (a warm environment), so the handler's own time is what is measured.

Prints one line, `OUTCOME <json>`: the result or the error, and the time left at the end.
"""

from __future__ import annotations

import importlib.abc
import json
import sys
import time
from typing import Any


class NoPrefectServer(importlib.abc.MetaPathFinder):
    """prefect-client's view of `prefect.server`: not importable."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "prefect.server" or name.startswith("prefect.server."):
            raise ModuleNotFoundError(f"No module named {name!r} (the zip has prefect-client)", name=name)
        return None


def main() -> None:
    sys.meta_path.insert(0, NoPrefectServer())
    event, seconds = json.loads(sys.argv[1]), float(sys.argv[2])

    from lambda_context import FakeContext

    import flows.reports  # noqa: F401  (warm: what a previous invocation loaded)
    import flows.runtime.sqs  # noqa: F401
    from flows.runtime import plain
    from flows.runtime.handler import handler

    assert not plain.prefect_api_available(), "the probe must take the path without a Prefect API"
    context = FakeContext(seconds)
    started = time.monotonic()
    outcome: dict[str, Any]
    try:
        outcome = {"ok": True, "result": handler(event, context)}
    except Exception as exc:  # what Lambda would report as the function's error
        outcome = {"ok": False, "error_type": type(exc).__name__, "error": str(exc)}
    outcome["elapsed"] = time.monotonic() - started
    outcome["remaining_ms"] = context.get_remaining_time_in_millis()
    outcome["prefect_server_loaded"] = sorted(m for m in sys.modules if m.startswith("prefect.server"))
    print("OUTCOME " + json.dumps(outcome), flush=True)


if __name__ == "__main__":
    main()
