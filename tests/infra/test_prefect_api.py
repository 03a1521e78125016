"""The providers' REST client asks again when Prefect says "not now", and only then."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from infra_pulumi import prefect_api
from infra_pulumi.prefect_api import PrefectApi, PrefectApiError


class Scripted:
    """A loopback API answering each request with the next (status, headers) of a script."""

    def __init__(self, answers: list[tuple[int, dict[str, str]]]):
        self.answers = list(answers)
        self.seen: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                owner.seen.append(self.command)
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                status, headers = owner.answers.pop(0) if owner.answers else (500, {})
                body = b'{"detail": "scripted"}'
                self.send_response(status)
                for name, value in {**headers, "content-length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = do_PATCH = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def scripted(monkeypatch) -> Iterator[Callable[[list[tuple[int, dict[str, str]]]], Scripted]]:
    monkeypatch.setattr(prefect_api, "RETRY_BASE_SECONDS", 0.01)
    servers: list[Scripted] = []

    def make(answers: list[tuple[int, dict[str, str]]]) -> Scripted:
        servers.append(Scripted(answers))
        return servers[-1]

    yield make
    for server in servers:
        server.server.shutdown()


def test_a_busy_server_is_asked_again(scripted):
    api = scripted([(503, {}), (429, {"retry-after": "0"}), (204, {})])
    assert PrefectApi(api.url, None).call("DELETE", api.url + "/automations/x").status_code == 204
    assert api.seen == ["DELETE"] * 3


def test_a_create_is_not_repeated_after_an_answer_that_may_have_done_it(scripted):
    api = scripted([(502, {}), (201, {})])
    with pytest.raises(PrefectApiError, match="answered 502: "):
        PrefectApi(api.url, None).call("POST", api.url + "/automations/", {"name": "n"})
    assert api.seen == ["POST"]


def test_a_refusal_is_not_retried_and_persistent_busy_gives_up(scripted):
    api = scripted([(422, {})])
    with pytest.raises(PrefectApiError, match=r"answered 422: \{\"detail\": \"scripted\"\}"):
        PrefectApi(api.url, None).call("GET", api.url + "/work_pools/p")
    assert api.seen == ["GET"]
    busy = scripted([(503, {})] * 10)
    with pytest.raises(PrefectApiError, match=r"answered 503 \(after 4 attempts\)"):
        PrefectApi(busy.url, None).call("GET", busy.url + "/work_pools/p")
    assert busy.seen == ["GET"] * prefect_api.ATTEMPTS


def test_waits_back_off_and_honour_retry_after_up_to_the_cap(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(prefect_api.time, "sleep", waits.append)
    api = Scripted([(503, {}), (503, {}), (429, {"retry-after": "3"}), (204, {})])
    capped = Scripted([(429, {"retry-after": "999"}), (204, {})])
    try:
        PrefectApi(api.url, None).call("GET", api.url + "/work_pools/p")
        PrefectApi(capped.url, None).call("GET", capped.url + "/work_pools/p")
    finally:
        api.server.shutdown()
        capped.server.shutdown()
    assert waits == [0.5, 1.0, 3.0, 10.0]
