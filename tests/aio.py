"""Run a coroutine from a sync test without touching the main thread's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """A private loop: `asyncio.run` would unset the main thread's loop, which
    `@pulumi.runtime.test` tests later in the same session rely on."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
