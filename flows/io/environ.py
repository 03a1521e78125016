"""Set environment variables for a block and put every one back afterwards.

Prefect and boto3 read their settings from the environment, so a run's settings (the function's
run env, the demo's loopback endpoints) are applied there; a warm Lambda process or the caller's
shell must find it as it was.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager


@contextmanager
def patched_environ(
    values: Mapping[str, str],
    unset: tuple[str, ...] = (),
    environ: MutableMapping[str, str] | None = None,
) -> Iterator[None]:
    """Set `values` and remove `unset` for the block (in `environ`, default the process's)."""
    target = os.environ if environ is None else environ
    saved = {k: target.get(k) for k in (*values, *unset)}
    try:
        for k in unset:
            target.pop(k, None)
        target.update(values)
        yield
    finally:
        for k, old in saved.items():
            if old is None:
                target.pop(k, None)
            else:
                target[k] = old
