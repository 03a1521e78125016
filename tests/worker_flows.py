"""Tiny flows for the work-pool tests: they run inside the Lambda emulator like the real flows do.

`echo` returns what the run's environment carried (the worker's `env` job variables reach the
flow, the API key never does); `fail` fails inside the function (the run must end Failed).
"""

from __future__ import annotations

import os

from prefect import flow


@flow
def echo(names: list[str] | None = None) -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in names or []}


@flow
def fail(message: str = "failing on purpose") -> None:
    raise ValueError(message)
