"""A lease on a store prefix, so two writers of one survey never interleave.

Held as a small JSON record in the store itself (compare-and-swap writes), renewed while held,
taken over by another writer only once expired: a killed holder cannot renew it.

The record is data from a store others can write to (`flows.core.state_json`). A garbled one (not
JSON, too big or deep, `expires` missing, not a number, NaN) is no holder's: read as expired and
logged. An `expires` further out than now + ttl + `CLOCK_SKEW_SECONDS` (Infinity, 1e300, a huge
integer) is not believed either, but neither is it taken over at once: it may be a live holder's
whose clock runs ahead, and taking that over would interleave two syncs. It is read as expiring
one ttl after the record was written, by the store's clock (its LastModified): a live holder
rewrites it every ttl/3 and keeps it, a dead or forged one lapses like any other.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from flows.core import state_json
from flows.core.errors import GarbledState, LeaseHeld, LeaseLost, StoreError
from flows.io.store.base import _iso, _one_line

_log = logging.getLogger(__name__)

# How far ahead of ours another holder's clock may run before its expiry is not believed.
CLOCK_SKEW_SECONDS = 60.0
_OWNER_CHARS = 120


class LeaseRead(tuple[dict[str, Any], str]):
    """A lease record as read, the pair (record, version) with two notes: `record` is {} when
    garbled (`problem` says why); `version` changes with every write; `written_at` is when the
    store says it was written (epoch seconds, its own clock)."""

    written_at: float | None
    problem: str | None

    def __new__(
        cls, record: dict[str, Any], version: str, written_at: float | None = None, problem: str | None = None
    ) -> LeaseRead:
        self = super().__new__(cls, (record, version))
        self.written_at, self.problem = written_at, problem
        return self

    @property
    def record(self) -> dict[str, Any]:
        return self[0]

    @property
    def version(self) -> str:
        return self[1]

    @classmethod
    def of(cls, read: tuple[Any, Any]) -> LeaseRead:
        """A slot's answer as a `LeaseRead` (a plain pair from another slot included)."""
        if isinstance(read, LeaseRead):
            return read
        record, version = read
        if not isinstance(record, dict):
            return cls({}, str(version), None, f"lease record is a {type(record).__name__}, not an object")
        return cls(record, str(version))


class _LeaseSlot(Protocol):
    """Compare-and-swap storage for one lease record; `version` changes with every write."""

    where: str

    def read(self) -> LeaseRead | None: ...
    def create(self, record: dict[str, Any]) -> str | None: ...
    def replace(self, record: dict[str, Any], version: str) -> str | None: ...


def believed_expiry(current: LeaseRead, now: float, ttl: float) -> tuple[float, str | None]:
    """When a read lease expires, as far as it can be believed, and why not (None: as written).

    Garbled: expired (0). Further out than now + ttl + skew: one ttl after its write (see the
    module's docstring), or expired when the store gave no write time.
    """
    if current.problem:
        return 0.0, f"{current.problem}; read as expired"
    value = current.record.get("expires")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0, f"its expires is {type(value).__name__}, not a number; read as expired"
    try:
        expires = float(value)
    except OverflowError:  # an integer past any float
        expires = math.inf
    if math.isnan(expires) or expires < 0:  # no holder writes either (a released lease has 0)
        return 0.0, f"its expires is {expires}; read as expired"
    if expires <= now + ttl + CLOCK_SKEW_SECONDS:
        return expires, None
    if current.written_at is None or not math.isfinite(current.written_at):
        return 0.0, "its expires is further out than any holder writes; read as expired"
    capped = current.written_at + ttl
    return capped, (
        f"its expires is further out than any holder writes; read as expiring one ttl after it was "
        f"written, {_iso(capped)}"
    )


def lease_read(data: bytes | str, version: str, written_at: float | None) -> LeaseRead:
    """A slot's read of a lease record's bytes (see `LeaseRead`); never raises."""
    try:
        record = state_json.read_object(data, state_json.MAX_LEASE_BYTES, "lease record")
    except GarbledState as exc:
        return LeaseRead({}, version, written_at, str(exc))
    return LeaseRead(record, version, written_at)


def _owner(record: dict[str, Any]) -> str:
    owner = _one_line(str(record.get("owner", "?")))
    return owner if len(owner) <= _OWNER_CHARS else owner[: _OWNER_CHARS - 1] + "…"


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
        self._doubted: set[str] = set()  # versions whose doubtful record was logged

    def _record(self, expires: float) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "token": self.token,
            "expires": expires,
            "expires_utc": _iso(expires),
            "ttl": self.ttl,
        }

    def _expiry(self, current: LeaseRead, now: float) -> float:
        """`believed_expiry`, its doubt logged once per record version."""
        expires, problem = believed_expiry(current, now, self.ttl)
        if problem and current.version not in self._doubted:
            self._doubted.add(current.version)
            _log.warning("lease %s: %s", self.slot.where, problem)
        return expires

    def acquire(self) -> Lease:
        if not self.hold:
            return self
        deadline = self._clock() + self.wait_seconds
        while True:
            now = self._clock()
            read = self.slot.read()
            current = None if read is None else LeaseRead.of(read)
            if current is not None and current.record.get("token") == self.token:
                self._version = current.version  # a retried conditional write of ours had landed
                self._expires = self._expiry(current, now)
                break
            if current is None or self._expiry(current, now) <= now:
                record = self._record(now + self.ttl)
                if current is None:
                    version = self.slot.create(record)
                else:
                    version = self.slot.replace(record, current.version)
                if version is not None:
                    self._version, self._expires = version, record["expires"]
                    break
                continue  # another writer moved first: look again
            if now >= deadline:
                raise LeaseHeld(
                    f"{self.slot.where}: another sync holds the lease ({_owner(current.record)}, "
                    f"until {_iso(self._expiry(current, now))}); try again once it has finished, or "
                    "after that time if it was killed"
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
