"""Tools the AWS-like tiers need beside the project's venv, installed once and cached.

The runtime client (`awslambdaric`, Lambda's Python 3.12), LocalStack (Python 3.13) and SeaweedFS
each live in a venv of their own under `cache_root()`, keyed by the interpreter and the exact
requirements, so a second run (and CI's next run on the same machine) reuses them. An install is
made under a file lock and marked complete last, so two pytest processes never use half a venv.

Installs start in the background when the session starts (`prefetch`), while the fast tiers run;
a fixture then waits for its tool. A tool that cannot be installed here is a `ToolUnavailable`
whose message is the one line pytest prints for the skip (`skip_unavailable`).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

INSTALL_TIMEOUT_SECONDS = 600


class ToolUnavailable(RuntimeError):
    """A tool the tier needs is missing here and could not be installed; the message is one line."""


def cache_root() -> Path:
    """`QUEST_TEST_CACHE`, else `$XDG_CACHE_HOME/quest-tests`, else `~/.cache/quest-tests`."""
    explicit = os.environ.get("QUEST_TEST_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "quest-tests"


def find_python(version: str) -> Path:
    """The interpreter for `version` ("3.12") as CI finds it: `pythonX.Y` on PATH, then pyenv's."""
    name = f"python{version}"
    candidates = [shutil.which(name)]
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/{version}.*/bin/{name}"), reverse=True)
    for candidate in candidates:
        if candidate and _runs(candidate, version):
            return Path(candidate)
    raise ToolUnavailable(f"Python {version} not found (no {name} on PATH or under {pyenv_root}/versions)")


def _runs(python: str, version: str) -> bool:
    """A pyenv shim exists for every version it knows of, installed or not: ask the interpreter."""
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.strip() == version


@dataclass(frozen=True)
class VenvSpec:
    """A cached venv: its name, interpreter version, exact requirements and extra pip arguments."""

    name: str
    python_version: str
    requirements: tuple[str, ...]
    pip_args: tuple[str, ...] = ()

    def key(self, python: Path) -> str:
        text = "\n".join([str(python), self.python_version, *self.requirements, "--", *self.pip_args])
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def venv(spec: VenvSpec) -> Path:
    """The venv's directory, installing it on first use; its interpreter is `<dir>/bin/python`."""
    python = find_python(spec.python_version)
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{spec.name}-{spec.key(python)}"
    if (final / ".complete").exists():
        return final
    with locked(root / f"{spec.name}.lock"):
        if (final / ".complete").exists():
            return final
        # A venv records its own path in its scripts, so it is built in place (under the lock);
        # one without `.complete` is what an interrupted install left, and is built again.
        shutil.rmtree(final, ignore_errors=True)
        try:
            _run([str(python), "-m", "venv", str(final)], spec.name)
            pip = [str(final / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            _run([*pip, *spec.pip_args, *spec.requirements], spec.name)
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)
            raise
        (final / ".complete").write_text("\n".join(spec.requirements) + "\n")
    return final


def _run(cmd: list[str], name: str) -> None:
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ToolUnavailable(f"{name}: install did not finish in {INSTALL_TIMEOUT_SECONDS} s") from exc
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ToolUnavailable(f"{name}: install failed: {last[0][:200]}")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` across processes (pytest-xdist's workers, two sessions)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- background installs

_futures: dict[str, Future[Path]] = {}
_futures_lock = threading.Lock()


def prefetch(spec: VenvSpec) -> Future[Path]:
    """Start installing `spec` in the background (once per process); `venv_when_ready` waits for it.

    A daemon thread, not an executor's: a session that ends early (`-x`) must not wait on a pip
    install it no longer needs (the lock and the `.complete` marker keep a cut install harmless).
    """
    with _futures_lock:
        if spec.name not in _futures:
            future: Future[Path] = Future()
            _futures[spec.name] = future

            def install() -> None:
                try:
                    future.set_result(venv(spec))
                except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
                    future.set_exception(exc)

            threading.Thread(target=install, name=f"install-{spec.name}", daemon=True).start()
        return _futures[spec.name]


def venv_when_ready(spec: VenvSpec, timeout: float = INSTALL_TIMEOUT_SECONDS) -> Path:
    """The venv, waiting for a background install if one is running; raises `ToolUnavailable`."""
    return prefetch(spec).result(timeout=timeout)


def skip_unavailable(exc: ToolUnavailable) -> None:
    """Skip with the one line that names the missing tool (pytest -ra prints it in the summary)."""
    import pytest

    pytest.skip(f"backend unavailable: {exc}")


if __name__ == "__main__":  # `python tests/tool_cache.py 3.12`: where the interpreter is
    print(find_python(sys.argv[1] if len(sys.argv) > 1 else "3.12"))
