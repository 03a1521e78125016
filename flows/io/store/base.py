"""The store interface and what both backends share: key rules, hashing, temp names."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Protocol

from flows.core.errors import SizeMismatch, StoreError
from flows.core.objects import META_SHA256, META_SHA256_SIZE, StoredObject

if TYPE_CHECKING:
    from flows.io.store.lease import Lease

S3_MIN_PART = 5 * 1024 * 1024

INTERNAL_MARK = ".quest-"
TMP_SEGMENT = ".quest-tmp"
LEASE_NAME = ".quest-lease.json"
STAT_CACHE_NAME = ".quest-stat.json"
_TMP_STAMP = "%Y%m%dT%H%M%SZ"


class ObjectStore(Protocol):
    """What the flows need from a store. Implemented by `S3Store` and `LocalStore`."""

    url: str

    def location(self, key: str) -> str: ...
    def list_keys(self, prefix: str = "") -> list[str]: ...
    def list_prefixes(self, prefix: str = "") -> list[str]: ...
    def head(self, key: str) -> StoredObject | None: ...
    def stat_prefix(self, prefix: str, workers: int = 8) -> dict[str, StoredObject]:
        """Every object under `prefix` with its metadata (S3 lists none: see `S3Store.stat_prefix`)."""
        ...

    def refresh_stat_cache(self, prefix: str, workers: int = 8) -> None: ...
    def read_bytes(self, key: str) -> bytes: ...
    def open_read(self, key: str) -> IO[bytes]: ...
    def put_bytes(
        self, key: str, data: bytes, metadata: dict[str, str] | None = None, content_type: str | None = None
    ) -> StoredObject: ...
    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        metadata: dict[str, str] | None = None,
        content_type: str | None = None,
        expected_size: int | None = None,
    ) -> StoredObject: ...
    def delete(self, key: str) -> None: ...
    def lease(
        self,
        prefix: str,
        ttl: float,
        *,
        owner: str | None = None,
        wait_seconds: float = 10.0,
        hold: bool = True,
    ) -> Lease: ...
    def cleanup_stale(
        self, prefix: str, older_than_seconds: float, now: float | None = None
    ) -> list[str]: ...


def head_each(store: ObjectStore, keys: list[str], workers: int) -> dict[str, StoredObject]:
    """A HEAD per key, `workers` at a time (round trips, not bandwidth, are what a HEAD costs)."""
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(keys) or 1))) as pool:
        heads = pool.map(store.head, keys)
        return {key: obj for key, obj in zip(keys, heads, strict=True) if obj is not None}


def is_internal_key(key: str) -> bool:
    """True for the store's own objects (temp uploads, leases), which listings never show."""
    return any(part.startswith(INTERNAL_MARK) for part in key.split("/"))


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"invalid object key {key!r}")
    if any(ord(c) < 32 for c in key):
        raise StoreError(f"invalid object key {key!r}")
    if is_internal_key(key):
        raise StoreError(f"invalid object key {key!r}: names starting with {INTERNAL_MARK!r} are reserved")
    return key


def _check_prefix(prefix: str) -> str:
    """A lease/cleanup prefix: the store root ("") or a key prefix ending in `/`."""
    if prefix and (not prefix.endswith("/") or not _check_key(prefix[:-1])):
        raise StoreError(f"invalid prefix {prefix!r}: use '' or a path ending in '/'")
    return prefix


def _clean_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (metadata or {}).items()}


def read_only_refusal(action: str, where: str) -> str:
    return f"{action} {where}: refused, the store is open read-only (a dry run or a check writes nothing)"


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _Counted:
    """Counts the chunks it passes on (dropping empty ones)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = chunks
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            if chunk:
                self.size += len(chunk)
                yield chunk


class _Hashing(_Counted):
    """Counts and hashes the chunks it passes on."""

    def __init__(self, chunks: Iterable[bytes]):
        super().__init__(chunks)
        self._sha = hashlib.sha256()

    def __iter__(self) -> Iterator[bytes]:
        for chunk in super().__iter__():
            self._sha.update(chunk)
            yield chunk

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def integrity(self) -> dict[str, str]:
        """The metadata published with the bytes: their sha256 and the count it covers."""
        return {META_SHA256: self.sha256, META_SHA256_SIZE: str(self.size)}


def _check_size(key: str, actual: int, expected: int | None) -> None:
    if expected is not None and actual != expected:
        raise SizeMismatch(f"{key}: received {actual} bytes, expected {expected}; not published")


def _tmp_name(now: float | None = None) -> str:
    """A unique temp name that carries its creation time, so cleanup can age it without a clock
    of the store's own (moto reports every multipart upload as started in 2010)."""
    stamp = datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime(_TMP_STAMP)
    return f"{stamp}-{uuid.uuid4().hex}"


def _tmp_started(name: str) -> float | None:
    """The creation time `_tmp_name` put into `name`, or None for other names."""
    try:
        return datetime.strptime(name[: len("20240101T000000Z")], _TMP_STAMP).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
