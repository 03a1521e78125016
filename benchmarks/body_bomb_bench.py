"""Peak memory of reading a hostile listing: a gzip bomb (and a stacked `gzip, gzip` one) served
on loopback to `fetch_listing_page` through the project's client.

Each case runs in a fresh child process (`--child`), which reports its peak RSS growth
(`resource.getrusage` ru_maxrss, before the GET vs after) and what the GET ended with. Compare a
checkout with another: `--root /path/to/checkout` runs the children on that checkout's `flows`.

    .venv/bin/python benchmarks/body_bomb_bench.py                 # this checkout
    .venv/bin/python benchmarks/body_bomb_bench.py --root /tmp/base
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MIB = 1024 * 1024
CASES = {
    "gzip 227 MiB": (("gzip",), 227),
    "gzip, gzip 512 MiB": (("gzip", "gzip"), 512),
}


def bomb(stack: tuple[str, ...], mib: int) -> bytes:
    """Compressed a MiB at a time through every layer, so making it does not raise the peak RSS."""
    layers = [zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16) for _ in stack]
    out: list[bytes] = []

    def push(data: bytes, level: int) -> None:
        if level == len(layers):
            out.append(data)
        elif data:
            push(layers[level].compress(data), level + 1)

    block = bytes(MIB)
    for _ in range(mib):
        push(block, 0)
    for level, layer in enumerate(layers):
        push(layer.flush(), level + 1)
    return b"".join(out)


def child(case: str) -> None:
    stack, mib = CASES[case]
    body = bomb(stack, mib)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def handle(self) -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client that stopped reading
                super().handle()

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Encoding", ", ".join(stack))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/pub/time.series/pr/"

    from flows.io.fetch import fetch_listing_page
    from flows.io.http import make_client
    from flows.settings import Settings

    settings = Settings(contact="bench@example.com")
    with make_client(settings, url) as client:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            text, _ = fetch_listing_page(client, url)
            outcome = f"read {len(text):,} characters"
        except Exception as exc:  # noqa: BLE001 - the outcome is what is reported
            outcome = f"{type(exc).__name__}: {exc}"[:160]
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"body_bytes": len(body), "rss_growth_kib": after - before, "outcome": outcome}))
    server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--child", choices=list(CASES))
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    env = {**os.environ, "PYTHONPATH": args.root}
    env = {k: v for k, v in env.items() if not k.startswith("QUEST_")}
    print(f"flows from {args.root}")
    for case in CASES:
        out = subprocess.run(
            [sys.executable, __file__, "--child", case],
            env=env,
            cwd=args.root,
            capture_output=True,
            text=True,
        )
        if out.returncode:
            print(f"{case}: child failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        got = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{case}: {got['body_bytes']:,} bytes served, peak RSS +{got['rss_growth_kib'] / 1024:,.1f} MiB; "
            f"{got['outcome']}"
        )


if __name__ == "__main__":
    main()
