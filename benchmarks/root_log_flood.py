"""Run-log size of survey discovery against a root of 100 surveys plus N junk folders (issue 27).

    python benchmarks/root_log_flood.py [N]      # default 50,000

Serves the root from the loopback upstream, resolves `all` against an empty local store and
prints how many lines and bytes the discovery logged, and how long the parse took.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time

from flows.devkit.upstream_server import UpstreamServer
from flows.discovery import resolve_surveys
from flows.io.http import make_client
from flows.settings import MAX_SURVEYS, Settings


class Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines = self.bytes = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.lines += 1
        self.bytes += len(self.format(record).encode()) + 1


def main(junk: int) -> None:
    surveys = {f"s{i:03d}": {f"s{i:03d}.a": b"a"} for i in range(MAX_SURVEYS)}
    with UpstreamServer(surveys) as up, tempfile.TemporaryDirectory() as store:
        for i in range(junk):
            up.add_root_entry(f"Junk-{i:06d}")
        settings = Settings(store=store, bls_base_url=up.bls_base_url, contact="bench@example.com")
        log = logging.getLogger("bench.discovery")
        log.propagate = False
        counter = Count()
        log.addHandler(counter)
        started = time.perf_counter()
        with make_client(settings, settings.bls_base_url) as client:
            selection = resolve_surveys(settings, None, client, log)
        took = time.perf_counter() - started
    print(
        f"{len(selection.surveys)} surveys + {junk:,} junk folders: {counter.lines:,} log lines, "
        f"{counter.bytes:,} bytes logged, resolve {took:.2f} s"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
