"""A lease on a store prefix, so two writers of one survey never interleave.

Held as a small JSON record in the store itself (compare-and-swap writes), renewed while held,
taken over by another writer only once expired: a killed holder cannot renew it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from flows.core.errors import LeaseHeld, LeaseLost, StoreError
from flows.io.store.base import _iso


class _LeaseSlot(Protocol):
    """Compare-and-swap storage for one lease record; `version` changes with every write."""

    where: str

    def read(self) -> tuple[dict[str, Any], str] | None: ...
    def create(self, record: dict[str, Any]) -> str | None: ...
    def replace(self, record: dict[str, Any], version: str) -> str | None: ...


def _lease_expires(record: dict[str, Any]) -> float:
    value = record.get("expires")
    return float(value) if isinstance(value, int | float) else 0.0


def default_owner() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


class Lease:
    """An exclusive, expiring lease on a store prefix, held as a small JSON record in the store.

    Acquiring is a conditional create (or a conditional replace of an expired record), so of two
    writers exactly one wins. While held it is renewed every ttl/3 by a daemon thread; a holder that
    is killed stops renewing and the lease expires after `ttl`, when the next writer takes it over.
    A writer finding it held waits up to `wait_seconds` (a finishing sync hands over in that time)
    and then refuses with `LeaseHeld`, naming the holder and the expiry: on Lambda, waiting out a
    whole sync would burn the time budget of the second run for nothing.
    """

    def __init__(
        self,
        slot: _LeaseSlot,
        ttl: float,
        *,
        owner: str | None = None,
        wait_seconds: float = 10.0,
        poll_seconds: float = 0.5,
        hold: bool = True,
        clock: Callable[[], float] = time.time,
    ):
        if ttl <= 0:
            raise StoreError(f"lease {slot.where}: ttl must be positive, got {ttl}")
        self.slot, self.ttl, self.hold = slot, ttl, hold
        self.owner = owner or default_owner()
        self.token = uuid.uuid4().hex
        self.wait_seconds, self.poll_seconds, self._clock = wait_seconds, poll_seconds, clock
        self._version: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._expires = 0.0  # the expiry this holder last wrote
        self.lost: str | None = None

    def _record(self, expires: float) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "token": self.token,
            "expires": expires,
            "expires_utc": _iso(expires),
            "ttl": self.ttl,
        }

    def acquire(self) -> Lease:
        if not self.hold:
            return self
        deadline = self._clock() + self.wait_seconds
        while True:
            now = self._clock()
            current = self.slot.read()
            if current is not None and current[0].get("token") == self.token:
                self._version = current[1]  # a retried conditional write of ours had landed
                self._expires = _lease_expires(current[0])
                break
            if current is None or _lease_expires(current[0]) <= now:
                record = self._record(now + self.ttl)
                if current is None:
                    version = self.slot.create(record)
                else:
                    version = self.slot.replace(record, current[1])
                if version is not None:
                    self._version, self._expires = version, record["expires"]
                    break
                continue  # another writer moved first: look again
            if now >= deadline:
                holder = current[0]
                raise LeaseHeld(
                    f"{self.slot.where}: another sync holds the lease ({holder.get('owner', '?')}, "
                    f"until {_iso(_lease_expires(holder))}); try again once it has finished, or after that "
                    "time if it was killed"
                )
            time.sleep(max(0.01, min(self.poll_seconds, deadline - now)))
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease {self.slot.where}", daemon=True)
        self._thread.start()
        return self

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            expires = self._clock() + self.ttl
            try:
                version = self.slot.replace(self._record(expires), self._version or "")
            except StoreError:
                continue  # transient; the next tick tries again, well before the expiry
            if version is None:
                self.lost = f"{self.slot.where}: the lease was taken over while held (renewal failed)"
                return
            self._version, self._expires = version, expires

    def check(self) -> None:
        """Raise `LeaseLost` if the lease is no longer ours (call before irreversible steps).

        Also when it has run past the expiry this holder last wrote (a process paused longer than
        the ttl, renewals failing): another writer may already have taken it over.
        """
        if self.lost:
            raise LeaseLost(self.lost)
        if self._thread is not None and self._clock() >= self._expires:
            raise LeaseLost(
                f"{self.slot.where}: the lease expired while held (renewed until {_iso(self._expires)}); "
                "another sync may have taken over"
            )

    def release(self) -> None:
        """Stop renewing and mark the record expired (a conditional write: never someone else's)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        if not self.lost:
            with contextlib.suppress(StoreError):
                self.slot.replace(self._record(0.0), self._version or "")

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.release()
        if exc_type is None:
            self.check()
