"""What Lambda runs: the zip `pulumi up` ships, unpacked, and AWS's runtime client on Python 3.12.

- The zip is `infra_pulumi.package.build()` (Lambda's platform and Python; cached under
  .quest-cache/lambda by input hash, so a session builds it at most once and an unchanged tree
  never again).
- It is unpacked once per zip under the tool cache, files 0444 and folders 0555 (a task root
  nothing writes to; the emulator also mounts it read-only where it can).
- The runtime is `awslambdaric` in a Python 3.12 venv of its own (tests/tool_cache.py). Only it
  and its dependencies are in that venv, so every other import comes from the task root.
- Bytecode goes to a cache beside the unpacked zip (`PYTHONPYCACHEPREFIX`), never into the task
  root. Lambda itself compiles the zip's modules at every cold start (the zip carries no .pyc:
  ~8 s of imports here instead of ~2 s); the cache only makes the tests' cold starts cheaper.

`runtime_client()` raises `tool_cache.ToolUnavailable` (one line) when Python 3.12 or the
runtime client cannot be had; tests skip with it. `prefetch_for` starts both in the background
when the session collects a module that uses them, so the build overlaps the tests before it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
import zipfile
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tool_cache import ToolUnavailable, VenvSpec, cache_root, locked, venv_when_ready

RUNTIME_CLIENT = VenvSpec("lambda-ric-py312", "3.12", ("awslambdaric==4.2.2",))
# Unpacked zips (and their bytecode caches) kept; each is ~165 MB.
KEEP_UNPACKED = 2


@dataclass(frozen=True)
class RuntimeClient:
    """The interpreter that runs `-m awslambdaric`, the task root, and where bytecode may go."""

    python: Path
    task_root: Path
    pycache: Path
    zip_path: Path
    zip_sha256: str
    build_seconds: float  # this process's wait for the zip (0 when it came from the cache)
    package: Any  # infra_pulumi.package.BuiltPackage


_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lambda-code")
_future: Future[RuntimeClient] | None = None
_future_lock = threading.Lock()
# Names a test module imports when it runs the function under the runtime client.
USERS = ("runtime_client", "runtime_emulator")


def runtime_client() -> RuntimeClient:
    """The zip (built or cached) unpacked, and the runtime client's venv; once per process."""
    return prefetch().result()


def prefetch() -> Future[RuntimeClient]:
    global _future
    with _future_lock:
        if _future is None:
            _future = _pool.submit(_prepare)
        return _future


def prefetch_for(items: Iterable[Any]) -> None:
    """`prefetch()` when a collected test's module uses the runtime client (pytest items)."""
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and any(name in vars(module) for name in USERS):
            prefetch()
            return


def _prepare() -> RuntimeClient:
    python = venv_when_ready(RUNTIME_CLIENT) / "bin" / "python"
    from infra_pulumi.package import PackageError, build

    built_at = time.monotonic()
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    try:
        # pytest-xdist's workers each collect every test and prefetch: one builds, the others
        # wait here and take the zip from the cache.
        with locked(root / "zip-build.lock"):
            package = build()
    except PackageError as exc:
        first = str(exc).splitlines()[0]
        raise ToolUnavailable(f"the Lambda zip could not be built: {first}") from exc
    build_seconds = 0.0 if package.cached else time.monotonic() - built_at
    task_root = unpacked(package.path, package.sha256)
    pycache = task_root.parent / f"{task_root.name}.pycache"
    pycache.mkdir(exist_ok=True)
    return RuntimeClient(python, task_root, pycache, package.path, package.sha256, build_seconds, package)


def stack_function(
    runtime: RuntimeClient,
    *,
    bucket: str,
    timeout_seconds: int,
    memory_mb: int = 1024,
    surveys: tuple[str, ...] = ("all",),
    extra_env: dict[str, str] | None = None,
    invoke_failure_queue_url: str | None = None,
    secret_arn: str | None = None,
    **settings: Any,
) -> tuple[str, dict[str, str]]:
    """(handler, environment) of the function as the Pulumi program configures it.

    Both come from the program's own code (`infra_pulumi.runner.HANDLER`, `function_environment`
    over `RunnerArgs`), so a variable the program stops setting is missing here too. `settings`
    are further `RunnerArgs` fields (prefect_api_url, bls_base_url, population_url, ...);
    `extra_env` is the stack's `extraEnv` (a test's endpoint overrides go there); `secret_arn` the
    work-pool stack's Prefect API key secret.
    """
    from infra_pulumi.runner import HANDLER, RunnerArgs, function_environment

    args = RunnerArgs(
        package=runtime.package,
        bucket_name=bucket,
        bucket_arn=f"arn:aws:s3:::{bucket}",
        queue_arn=f"arn:aws:sqs:us-east-1:123456789012:{bucket}-population-events",
        region="us-east-1",
        contact=settings.pop("contact", "tests@example.com"),
        bls_surveys=list(surveys),
        timeout_seconds=timeout_seconds,
        memory_mb=memory_mb,
        batch_size=10,
        batching_window_seconds=0,
        log_retention_days=14,
        extra_env=dict(extra_env or {}),
        **settings,
    )
    return HANDLER, function_environment(args, bucket, secret_arn, invoke_failure_queue_url)


def loopback_upstream(upstream: Any) -> dict[str, Any]:
    """`stack_function` settings for the loopback BLS/DataUSA server (flows/devkit/upstream_server.py),
    without the politeness limits' waits."""
    return {
        "bls_base_url": upstream.bls_base_url,
        "population_url": upstream.population_url,
        "bls_max_concurrent_requests": 8,
        "bls_requests_per_second": 100.0,
    }


def unpacked(zip_path: Path, sha256: str) -> Path:
    """The zip's files in a read-only folder named by its hash (made once, under a lock)."""
    root = cache_root() / "lambda-task"
    root.mkdir(parents=True, exist_ok=True)
    final = root / sha256[:16]
    if (root / f"{final.name}.complete").exists():
        return final
    with locked(root / "unpack.lock"):
        if (root / f"{final.name}.complete").exists():
            return final
        staging = root / f"{final.name}.staging"
        _remove(staging)
        _remove(final)
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(staging)
        read_only(staging)
        staging.rename(final)
        (root / f"{final.name}.complete").write_text(str(zip_path) + "\n")
        _prune(root, final)
    return final


def read_only(top: Path) -> None:
    """Files 0444, folders 0555, deepest first (a folder is closed after its contents)."""
    for path in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        os.chmod(path, 0o555 if path.is_dir() else 0o444)
    os.chmod(top, 0o555)


def _remove(path: Path) -> None:
    if not path.exists():
        return
    for sub in [path, *path.rglob("*")]:
        if sub.is_dir():
            with contextlib.suppress(OSError):
                os.chmod(sub, 0o755)
    shutil.rmtree(path, ignore_errors=True)


def _prune(root: Path, current: Path) -> None:
    marks = sorted(root.glob("*.complete"), key=lambda p: p.stat().st_mtime, reverse=True)
    for mark in [m for m in marks if m.stem != current.name][KEEP_UNPACKED - 1 :]:
        mark.unlink(missing_ok=True)
        _remove(root / mark.stem)
        _remove(root / f"{mark.stem}.pycache")
