"""No flow-run env can send the function's Prefect API key anywhere but its configured API.

The function runs in the Lambda emulator (a fresh, Lambda-like process per invocation) with its
key in a Secrets Manager secret (moto server on loopback) and the session's Prefect API. A loopback
capture server records every request it receives; the run's env points every redirect we know of
at it (the API URL in any case, profiles, home, proxies, CA bundles, the key's secret, ...). The
capture server must never see the key, and the run must still complete.
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from lambda_emulator import LambdaEmulator

KEY = f"pnu_canary_{uuid.uuid4().hex}"
CODE = ("flows", "tests/run_env_probe.py")


class CaptureServer:
    """Records method, path and headers of every request (proxy CONNECTs too); answers 404."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                capture.requests.append((self.command, self.path, dict(self.headers.items())))
                body = b'{"detail": "captured"}'
                self.send_response(404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_CONNECT = _record  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://{}:{}".format(*self.server.server_address[:2])

    def __enter__(self) -> CaptureServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def saw_key(self) -> bool:
        return any(KEY in f"{path} {headers}" for _method, path, headers in self.requests)


@pytest.fixture(scope="module")
def capture():
    with CaptureServer() as server:
        yield server


@pytest.fixture(scope="module")
def lam(prefect_harness, moto_server, capture):
    """Two functions with the key in a secret: `runner` on the session API, `leaky` on the capture."""
    import boto3
    from prefect.settings import PREFECT_API_URL

    sm = boto3.client("secretsmanager", endpoint_url=moto_server, region_name="us-east-1")
    arn = sm.create_secret(Name=f"key-{uuid.uuid4().hex[:6]}", SecretString=KEY)["ARN"]
    base = {"AWS_ENDPOINT_URL": moto_server, "QUEST_PREFECT_API_KEY_SECRET_ARN": arn}
    with LambdaEmulator(code_paths=CODE) as emulator:
        emulator.add_function("runner", env={**base, "PREFECT_API_URL": PREFECT_API_URL.value()})
        emulator.add_function("leaky", env={**base, "PREFECT_API_URL": f"{capture.url}/api"})
        yield emulator


def _probe_run() -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("probe")
        deployment_id = client.create_deployment(
            flow_id=flow_id,
            name=f"probe-{uuid.uuid4().hex[:8]}",
            entrypoint="tests/run_env_probe.py:probe",
        )
        run = client.create_flow_run_from_deployment(deployment_id, parameters={"names": PROBED})
    return str(run.id)


def _invoke(lam: LambdaEmulator, function: str, event: dict) -> tuple[dict, str | None]:
    import boto3

    client = boto3.client("lambda", endpoint_url=lam.endpoint_url, region_name="us-east-1")
    response = client.invoke(FunctionName=function, Payload=json.dumps(event).encode())
    return json.loads(response["Payload"].read()), response.get("FunctionError")


def _hostile_env(capture_url: str, profiles_dir: str) -> dict[str, object]:
    api = f"{capture_url}/api"
    env: dict[str, object] = {}
    for name in (
        "PREFECT_API_URL",
        "prefect_api_url",
        "Prefect_Api_Url",
        "pREFECT_API_URL",
        "PREFECT_CLOUD_API_URL",
    ):
        env[name] = api
    env.update(
        {
            "PREFECT_API_URL ": api,
            "PREFECT_API_URL\u0000": api,
            "PREFECT_API_URL=x": api,
            "PREFECT_PROFILES_PATH": f"{profiles_dir}/profiles.toml",
            "prefect_profiles_path": f"{profiles_dir}/profiles.toml",
            "PREFECT_PROFILE": "evil",
            "PREFECT_HOME": profiles_dir,
            "PREFECT_API_KEY": "pnu_replaced",
            "PREFECT_API_AUTH_STRING": "admin:pw",
            "PREFECT_API_TLS_INSECURE_SKIP_VERIFY": "true",
            "PREFECT_CLIENT_CUSTOM_HEADERS": json.dumps({"X-Forward": "1"}),
            "QUEST_PREFECT_API_KEY_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:other",
            "quest_prefect_api_key_secret_arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:other",
            "QUEST_STORE": "s3://someone-elses-bucket",
            "quest_store": "s3://someone-elses-bucket",
            "QUEST_BLS_BASE_URL": f"{capture_url}/bls/",
            "QUEST_POPULATION_URL": f"{capture_url}/population",
            "QUEST_CONTACT": "evil@example.com",
            "AWS_ENDPOINT_URL": capture_url,
            "AWS_CA_BUNDLE": "/nonexistent.pem",
            "SSL_CERT_FILE": "/nonexistent.pem",
            "REQUESTS_CA_BUNDLE": "/nonexistent.pem",
            "PYTHONPATH": profiles_dir,
            "LD_PRELOAD": "/nonexistent.so",
            # Prefect's own bookkeeping names (the worker adds them) must not pass either.
            "PREFECT__FLOW_RUN_ID": str(uuid.uuid4()),
            # Allowed names: one valid (applied), one invalid (refused, the run goes on).
            "quest_concurrency": 7,
            "QUEST_RETRIES": "-1",
            "QUEST_BLS_SURVEYS": ["not", "a", "string"],
            "QUEST_MAX_DELETE_FRACTION": "0.1\nPREFECT_API_URL=" + api,
        }
    )
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env[name] = capture_url
    env["NO_PROXY"] = env["no_proxy"] = ""
    return env


PROBED = [
    "PREFECT_API_URL",
    "prefect_api_url",
    "PREFECT_PROFILES_PATH",
    "PREFECT_HOME",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "QUEST_CONCURRENCY",
    "quest_concurrency",
    "QUEST_RETRIES",
    "QUEST_STORE",
    "QUEST_PREFECT_API_KEY_SECRET_ARN",
    "AWS_ENDPOINT_URL",
]


def test_the_capture_server_would_see_a_leaked_key(lam, capture):
    """Control: a function whose configured API *is* the capture server sends it the key."""
    before = len(capture.requests)
    body, error = _invoke(lam, "leaky", {"flow_run_id": str(uuid.uuid4())})
    assert error == "Unhandled", body  # the capture server answers 404 to everything
    assert len(capture.requests) > before and capture.saw_key()
    capture.requests.clear()


def test_no_run_env_sends_the_key_anywhere_else(lam, capture, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    capture.requests.clear()
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(f'active = "evil"\n[profiles.evil]\nPREFECT_API_URL = "{capture.url}/api"\n')
    tmp_path.chmod(0o755)
    run_id = _probe_run()
    body, error = _invoke(
        lam, "runner", {"flow_run_id": run_id, "env": _hostile_env(capture.url, str(tmp_path))}
    )

    assert not capture.saw_key(), capture.requests
    assert capture.requests == []  # nothing in the run's env even reached it
    assert error is None, body  # no name or value can crash the function either
    assert body["state"] == "Completed", body

    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(run_id)])))
    text = "\n".join(log.message for log in logs)
    (probe,) = [log.message for log in logs if log.message.startswith("probe: ")]
    seen = json.loads(probe.removeprefix("probe: "))
    assert seen["key_loaded"] is True  # the key was there to steal
    assert seen["api_url"] == lam.functions["runner"].env["PREFECT_API_URL"]
    assert seen["proxies"] == {}
    env = seen["env"]
    assert env["QUEST_CONCURRENCY"] == "7"  # the one valid run setting, under its canonical name
    assert all(env[name] is None for name in ("prefect_api_url", "quest_concurrency", "QUEST_RETRIES"))
    assert all(env[name] is None for name in ("HTTP_PROXY", "HTTPS_PROXY", "QUEST_STORE"))
    # The function's own variables are untouched.
    own = lam.functions["runner"].env
    for name in ("PREFECT_API_URL", "PREFECT_HOME", "AWS_ENDPOINT_URL", "QUEST_PREFECT_API_KEY_SECRET_ARN"):
        assert env[name] == own[name], name
    assert env["PREFECT_PROFILES_PATH"] is None
    # Every refusal is on the run's page, naming the variable, never quoting a value.
    for name in ("prefect_api_url", "PREFECT_PROFILES_PATH", "HTTPS_PROXY", "quest_store", "QUEST_RETRIES"):
        assert f"run env {name!r} not applied" in text, text
    assert capture.url not in text.replace(seen["api_url"], "")
