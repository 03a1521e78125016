"""Requests BLS sees in its worst second when Prefect's BLS limits are not in force.

A real `prefect server` on loopback holds `quest-bls-requests` and `quest-bls-rate` as each case
says (inactive, only the pacer inactive, inactive at 0, active); a `quest sync --survey aa` child
mirrors 8 files from the loopback upstream (each taken up 0.5 s late) with `QUEST_CONCURRENCY=8`
and its own limits at 1 at a time and 1/s.
Printed per case: the upstream's most requests in any second and most in flight. Compare a
checkout with another: `--root` runs the child on that checkout's `flows`.

    .venv/bin/python benchmarks/inactive_limits_bench.py                 # this checkout
    .venv/bin/python benchmarks/inactive_limits_bench.py --root /tmp/base
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PREFECT = str(Path(sys.executable).with_name("prefect"))
NAMES = ("quest-bls-requests", "quest-bls-rate")
CASES = {
    "both inactive (1, 1)": ({"limit": 1, "active": False}, {"limit": 1, "active": False}),
    "pacer inactive (1, 1)": ({"limit": 1}, {"limit": 1, "active": False}),
    "both inactive (0, 0)": ({"limit": 0, "active": False}, {"limit": 0, "active": False}),
    "both active (1, 1)": ({"limit": 1}, {"limit": 1}),
}


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "QUEST_"))}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", **extra)
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(ROOT), help="the checkout whose `flows` the child runs")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from flows.devkit.upstream_server import UpstreamServer

    with tempfile.TemporaryDirectory() as tmp:
        home, port = Path(tmp) / "prefect", _port()
        home.mkdir()
        env = _env(home, PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home}/db.sqlite")
        server = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        api = f"http://127.0.0.1:{port}/api"
        try:
            for _ in range(240):
                try:
                    if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            print(
                f"checkout: {args.root}; own limits 1 at a time, 1/s; QUEST_CONCURRENCY=8; 8 files + listing"
            )
            for case, bodies in CASES.items():
                for name, body in zip(NAMES, bodies, strict=True):
                    httpx.delete(f"{api}/v2/concurrency_limits/{name}")
                    httpx.post(
                        f"{api}/v2/concurrency_limits/", json={"name": name, **body}
                    ).raise_for_status()
                files = {f"aa.f{i}": b"x" * 1000 for i in range(8)}
                with UpstreamServer({"aa": files}) as up:
                    up.delay("*.f*", 0.5)  # each file taken up 0.5 s late: the transfers overlap
                    child_home = Path(tmp) / f"home-{len(up.requests)}-{time.monotonic_ns()}"
                    child_home.mkdir()
                    child = subprocess.run(
                        [sys.executable, "-m", "flows.cli", "sync", "--survey", "aa"],
                        env=_env(
                            child_home,
                            PYTHONPATH=args.root,
                            PREFECT_API_URL=api,
                            QUEST_BLS_BASE_URL=up.bls_base_url,
                            QUEST_POPULATION_URL=up.population_url,
                            QUEST_CONTACT="bench@example.com",
                            QUEST_STORE=str(child_home / "data"),
                            QUEST_CONCURRENCY="8",
                            QUEST_BLS_MAX_CONCURRENT_REQUESTS="1",
                            QUEST_BLS_REQUESTS_PER_SECOND="1",
                        ),
                        cwd=args.root,
                        capture_output=True,
                        text=True,
                        timeout=600,
                    )
                    last = (child.stdout + child.stderr).strip().splitlines()[-1:] or [""]
                    print(
                        f"{case:24} worst second {up.peak_rate():2d} requests,"
                        f" {up.peak_concurrency()} in flight, {len(up.requests)} requests,"
                        f" exit {child.returncode}: {last[0][:100]}"
                    )
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
