"""A loopback HTTP server that answers each path with canned bytes: status, header lines and body
exactly as given (a Content-Encoding the body does or does not honour, a gzip bomb)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class RawServer:
    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, Sequence[tuple[str, str]], bytes]] = {}
        self.url = ""

    def serve(
        self, path: str, body: bytes, headers: Sequence[tuple[str, str]] = (), status: int = 200
    ) -> str:
        """Answer GETs of `path` with these header lines (Content-Length added unless given); its URL."""
        self.routes[path] = (status, tuple(headers), body)
        return self.url + path


class _Handler(BaseHTTPRequestHandler):
    raw: RawServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def handle(self) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client that stopped reading
            super().handle()

    def do_GET(self) -> None:
        status, headers, body = self.raw.routes.get(self.path, (404, (), b"not found"))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if not any(name.lower() == "content-length" for name, _ in headers):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def raw_server() -> Iterator[RawServer]:
    raw = RawServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("_Bound", (_Handler,), {"raw": raw}))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    raw.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield raw
    finally:
        server.shutdown()
        server.server_close()
