"""A probe flow for tests/runtime/test_run_env_capture.py: it runs inside the Lambda emulator.

It logs what the run's environment and Prefect's loaded settings look like from inside the
function (presence of the key only, never the key), so the test can read it from the run's logs.
"""

from __future__ import annotations

import json
import os
import urllib.request

from prefect import flow, get_run_logger
from prefect.settings import get_current_settings


@flow
def probe(names: list[str]) -> dict[str, object]:
    api = get_current_settings().api
    seen: dict[str, object] = {
        "env": {name: os.environ.get(name) for name in names},
        "proxies": urllib.request.getproxies(),
        "api_url": str(api.url),
        "key_loaded": api.key is not None,
    }
    get_run_logger().info("probe: %s", json.dumps(seen))
    return seen
