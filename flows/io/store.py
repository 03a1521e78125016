"""The object store: S3 (boto3) or a local directory, behind one small interface.

Both backends keep the same promises, and the same tests run against both:
- keys are `/`-separated and relative to the store root (`s3://bucket/prefix` or a directory);
  segments starting with `.quest-` are the store's own (temp objects, leases) and never listed;
- a write is atomic: readers see the old object or the complete new one, never a partial one;
- an object is published together with its integrity metadata (`sha256` of its bytes and
  `sha256-size`, the byte count it covers) in one step, or not at all; `trusted_sha256` tells a
  caller whether a stored object's metadata can be believed without reading the bytes;
- `put_stream` never holds a whole object in memory, counts and hashes what it writes, and
  refuses to publish when the byte count differs from what the caller expected;
- expected failures (missing bucket, access denied, unreachable endpoint) are one-line `StoreError`s;
- `lease(prefix, ttl)` keeps two syncs of one prefix from interleaving, and `cleanup_stale` removes
  what a killed writer left behind once it is older than a grace period.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from flows.core.errors import LeaseHeld, LeaseLost, SizeMismatch, StoreError
from flows.core.objects import (
    META_SHA256,
    META_SHA256_SIZE,
    StoredObject,
)

S3_MIN_PART = 5 * 1024 * 1024
S3_MAX_COPY = 5 * 1024**3

INTERNAL_MARK = ".quest-"
TMP_SEGMENT = ".quest-tmp"
LEASE_NAME = ".quest-lease.json"
_TMP_STAMP = "%Y%m%dT%H%M%SZ"


class ObjectStore(Protocol):
    """What the flows need from a store. Implemented by `S3Store` and `LocalStore`."""

    url: str

    def location(self, key: str) -> str: ...
    def list_keys(self, prefix: str = "") -> list[str]: ...
    def head(self, key: str) -> StoredObject | None: ...
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


def stat_prefix(store: ObjectStore, prefix: str, workers: int = 8) -> dict[str, StoredObject]:
    """Every object under `prefix` with its metadata.

    S3 lists no user metadata, so this is one HEAD per object: they run `workers` at a time, or a
    survey of a few hundred files would spend seconds on round trips before planning anything.
    """
    keys = store.list_keys(prefix)
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


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _Hashing:
    """Counts and hashes the chunks it passes on."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = chunks
        self.size = 0
        self._sha = hashlib.sha256()

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            if chunk:
                self.size += len(chunk)
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


# --------------------------------------------------------------------------- lease


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
                break
            if current is None or _lease_expires(current[0]) <= now:
                record = self._record(now + self.ttl)
                if current is None:
                    version = self.slot.create(record)
                else:
                    version = self.slot.replace(record, current[1])
                if version is not None:
                    self._version = version
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
            try:
                version = self.slot.replace(self._record(self._clock() + self.ttl), self._version or "")
            except StoreError:
                continue  # transient; the next tick tries again, well before the expiry
            if version is None:
                self.lost = f"{self.slot.where}: the lease was taken over while held (renewal failed)"
                return
            self._version = version

    def check(self) -> None:
        """Raise `LeaseLost` if the lease is no longer ours (call before irreversible steps)."""
        if self.lost:
            raise LeaseLost(self.lost)

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


# --------------------------------------------------------------------------- local directory


@dataclass(frozen=True)
class _Fingerprint:
    """Which file a sidecar describes: a rename keeps inode and mtime, any other write changes them."""

    size: int
    ino: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> _Fingerprint:
        return cls(st.st_size, st.st_ino, st.st_mtime_ns)


def _sidecar(metadata: dict[str, str], fingerprint: _Fingerprint) -> str:
    return json.dumps({"metadata": metadata, "file": fingerprint.__dict__}, sort_keys=True)


def _sidecar_metadata(text: str, fingerprint: _Fingerprint) -> dict[str, str]:
    """The sidecar's metadata when it describes exactly this data file, else nothing.

    The data file and its sidecar are replaced by two renames: a crash between them, an old-format
    sidecar or an edit of the file leaves a sidecar about other bytes, which must not be believed.
    """
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(doc, dict) or doc.get("file") != fingerprint.__dict__:
        return {}
    metadata = doc.get("metadata")
    return {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}


class LocalStore:
    """A directory. Metadata lives in a parallel hidden tree; writes go through temp file + rename.

    The data and sidecar renames happen under one store-wide `flock`, so concurrent writers of a key
    publish as pairs; the sidecar also fingerprints its data file, so a pair broken by a crash is
    detected by `head` (metadata missing) rather than trusted.
    """

    META_DIR = ".quest-meta"
    TMP_DIR = TMP_SEGMENT

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).resolve()
        self.url = str(self.root)

    def location(self, key: str) -> str:
        return str(self._path(key))

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def _meta_path(self, key: str) -> Path:
        return self.root / self.META_DIR / (_check_key(key) + ".json")

    def _tmp_path(self) -> Path:
        tmp = self.root / self.TMP_DIR
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp / _tmp_name()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The store-wide lock around short critical sections (publishing renames, lease updates)."""
        import fcntl

        path = self.root / self.META_DIR / ".lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def list_keys(self, prefix: str = "") -> list[str]:
        if not self.root.exists():
            return []
        keys = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(INTERNAL_MARK)]
            for name in filenames:
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix) and not is_internal_key(key):
                    keys.append(key)
        return sorted(keys)

    def head(self, key: str) -> StoredObject | None:
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        if not path.is_file():
            return None
        try:
            metadata = _sidecar_metadata(self._meta_path(key).read_text(), _Fingerprint.of(st))
        except FileNotFoundError:
            metadata = {}
        return StoredObject(
            key=key,
            size=st.st_size,
            metadata=metadata,
            etag=metadata.get(META_SHA256),
            last_modified=datetime.fromtimestamp(st.st_mtime, UTC),
        )

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise StoreError(f"no object {self.location(key)}") from exc

    def open_read(self, key: str) -> IO[bytes]:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError as exc:
            raise StoreError(f"no object {self.location(key)}") from exc

    def put_bytes(
        self, key: str, data: bytes, metadata: dict[str, str] | None = None, content_type: str | None = None
    ) -> StoredObject:
        return self.put_stream(key, [data], metadata, content_type, expected_size=len(data))

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        metadata: dict[str, str] | None = None,
        content_type: str | None = None,
        expected_size: int | None = None,
    ) -> StoredObject:
        final, meta_path = self._path(key), self._meta_path(key)
        meta = _clean_metadata(metadata)
        if content_type:
            meta["content-type"] = content_type
        tmp_data, tmp_meta = self._tmp_path(), self._tmp_path()
        hashing = _Hashing(chunks)
        try:
            with tmp_data.open("wb") as fh:
                for chunk in hashing:
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            _check_size(key, hashing.size, expected_size)
            meta.update(hashing.integrity())
            tmp_meta.write_text(_sidecar(meta, _Fingerprint.of(tmp_data.stat())))
            final.parent.mkdir(parents=True, exist_ok=True)
            meta_path.parent.mkdir(parents=True, exist_ok=True)
            with self._locked():
                os.replace(tmp_data, final)
                os.replace(tmp_meta, meta_path)
        finally:
            for leftover in (tmp_data, tmp_meta):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
        return StoredObject(key=key, size=hashing.size, metadata=meta, etag=meta[META_SHA256])

    def delete(self, key: str) -> None:
        paths = (self._path(key), self._meta_path(key))
        with self._locked():
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def lease(
        self,
        prefix: str,
        ttl: float,
        *,
        owner: str | None = None,
        wait_seconds: float = 10.0,
        hold: bool = True,
    ) -> Lease:
        """An exclusive lease on `prefix` (see `Lease`); `hold=False` gives one that holds nothing."""
        slot = _LocalLeaseSlot(self, self.root / (_check_prefix(prefix) + LEASE_NAME))
        return Lease(slot, ttl, owner=owner, wait_seconds=wait_seconds, hold=hold)

    def cleanup_stale(self, prefix: str, older_than_seconds: float, now: float | None = None) -> list[str]:
        """Remove temp files older than the grace period (they are store-wide, whatever the prefix)."""
        _check_prefix(prefix)
        now = time.time() if now is None else now
        removed = []
        tmp_dir = self.root / self.TMP_DIR
        for path in sorted(tmp_dir.iterdir()) if tmp_dir.is_dir() else []:
            with contextlib.suppress(FileNotFoundError):
                if now - path.stat().st_mtime > older_than_seconds:
                    path.unlink()
                    removed.append(f"temp file {path}")
        return removed


class _LocalLeaseSlot:
    """A lease file whose compare-and-swap runs under the store's flock; its version is its text."""

    def __init__(self, store: LocalStore, path: Path):
        self.store, self.path, self.where = store, path, str(path)

    def _text(self) -> str | None:
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return None

    def _write(self, record: dict[str, Any]) -> str:
        text = json.dumps(record, sort_keys=True)
        tmp = self.store._tmp_path()
        tmp.write_text(text)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, self.path)
        return text

    def read(self) -> tuple[dict[str, Any], str] | None:
        with self.store._locked():
            text = self._text()
        if text is None:
            return None
        with contextlib.suppress(ValueError):
            record = json.loads(text)
            if isinstance(record, dict):
                return record, text
        return {}, text  # unreadable: treated as expired, so it can be taken over

    def create(self, record: dict[str, Any]) -> str | None:
        with self.store._locked():
            return None if self.path.exists() else self._write(record)

    def replace(self, record: dict[str, Any], version: str) -> str | None:
        with self.store._locked():
            return self._write(record) if self._text() == version else None


# --------------------------------------------------------------------------- S3

_PRECONDITION_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
_MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_ERROR_HINTS = {
    "NoSuchBucket": "the bucket does not exist",
    "AccessDenied": "access denied (check the credentials and the role's S3 permissions)",
    "AllAccessDisabled": "access to the bucket is disabled",
    "InvalidAccessKeyId": "the AWS access key is not valid",
    "SignatureDoesNotMatch": "the AWS secret key does not match the access key",
    "ExpiredToken": "the AWS session token has expired",
    "InvalidBucketName": "the bucket name is not valid",
    "PermanentRedirect": "the bucket is in another region (set AWS_REGION)",
}


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(
        response.get("Error", {}).get("Code")
        or response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    )


def describe_s3_error(action: str, where: str, exc: Exception) -> str:
    """One line for a failed S3 call: what, where, and the cause in words (never a traceback)."""
    code = _error_code(exc)
    if code:
        response = getattr(exc, "response", {}) or {}
        detail = _ERROR_HINTS.get(code) or response.get("Error", {}).get("Message") or "request failed"
        text = f"{action} {where}: {detail} ({code})"
    elif type(exc).__name__ in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError"):
        text = f"{action} {where}: cannot reach the S3 endpoint ({exc})"
    elif type(exc).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
        text = f"{action} {where}: no usable AWS credentials ({exc})"
    else:
        text = f"{action} {where}: {type(exc).__name__}: {exc}"
    return _one_line(text)


class S3Store:
    """A bucket (optionally a prefix in it), through boto3.

    Small objects go up in one PutObject, metadata and bytes together. Larger ones stream as a
    multipart upload to a private temp key (`<dir>/.quest-tmp/<time>-<uuid>`, next to the final key
    so it stays inside the prefixes the role may write); once every byte has arrived and the count is
    right it is completed there and then published by one server-side copy onto the final key with
    the sha256 as metadata. The final key is only ever written by a request carrying both bytes and
    sha256, so a failure or a concurrent writer can never leave it with missing or foreign metadata.
    (S3's own SHA256 checksum of a multipart upload is a checksum of part checksums, not the sha256
    of the object, so it cannot stand in for the `sha256` metadata.)
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        client: Any = None,
        multipart_threshold: int = 8 * 1024 * 1024,
        part_size: int = 8 * 1024 * 1024,
        part_concurrency: int = 4,
    ):
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        self._client = client
        self.multipart_threshold = max(multipart_threshold, S3_MIN_PART)
        self.part_size = max(part_size, S3_MIN_PART)
        self.part_concurrency = max(1, part_concurrency)
        self._bucket_seen = False

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_s3_client()
        return self._client

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.full_key(key)}"

    def full_key(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def _call(self, action: str, where: str, method: str, **kwargs: Any) -> Any:
        """One client call; an expected failure becomes a one-line `StoreError`."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(describe_s3_error(action, where, exc)) from exc

    def _pages(self, action: str, where: str, operation: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield from self.client.get_paginator(operation).paginate(Bucket=self.bucket, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(describe_s3_error(action, where, exc)) from exc

    def list_keys(self, prefix: str = "") -> list[str]:
        where = f"s3://{self.bucket}/{self.prefix + prefix}"
        keys = []
        for page in self._pages("list", where, "list_objects_v2", Prefix=self.prefix + prefix):
            for item in page.get("Contents", []):
                key = item["Key"][len(self.prefix) :]
                if not is_internal_key(key):
                    keys.append(key)
        return sorted(keys)

    def head(self, key: str) -> StoredObject | None:
        from botocore.exceptions import BotoCoreError, ClientError

        full_key = self.full_key(key)
        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=full_key)
        except ClientError as exc:
            if _error_code(exc) not in _MISSING_KEY_CODES:
                raise StoreError(describe_s3_error("head", self.location(key), exc)) from exc
            self._check_bucket()  # a HEAD has no body: a missing bucket is a bare 404 too
            return None
        except BotoCoreError as exc:
            raise StoreError(describe_s3_error("head", self.location(key), exc)) from exc
        self._bucket_seen = True
        return StoredObject(
            key=key,
            size=int(resp["ContentLength"]),
            metadata=_clean_metadata(resp.get("Metadata")),
            etag=resp.get("ETag", "").strip('"') or None,
            last_modified=resp.get("LastModified"),
        )

    def _check_bucket(self) -> None:
        """Raise unless the bucket exists (checked once per store: every later 404 is a key's)."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self._bucket_seen:
            return
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            if _error_code(exc) in ("404", "NotFound", "NoSuchBucket"):
                raise StoreError(
                    f"head s3://{self.bucket}: the bucket does not exist (NoSuchBucket)"
                ) from exc
            raise StoreError(describe_s3_error("head", f"s3://{self.bucket}", exc)) from exc
        self._bucket_seen = True

    def read_bytes(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError

        with self.open_read(key) as body:
            try:
                return body.read()
            except BotoCoreError as exc:
                raise StoreError(describe_s3_error("read", self.location(key), exc)) from exc

    def open_read(self, key: str) -> IO[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self.full_key(key))
        except (ClientError, BotoCoreError) as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                raise StoreError(f"no object {self.location(key)}") from exc
            raise StoreError(describe_s3_error("read", self.location(key), exc)) from exc
        body: IO[bytes] = resp["Body"]  # botocore's StreamingBody reads like a binary file
        return body

    def put_bytes(
        self, key: str, data: bytes, metadata: dict[str, str] | None = None, content_type: str | None = None
    ) -> StoredObject:
        meta = _clean_metadata(metadata)
        meta.update({META_SHA256: hashlib.sha256(data).hexdigest(), META_SHA256_SIZE: str(len(data))})
        extra = {"ContentType": content_type} if content_type else {}
        resp = self._call(
            "put",
            self.location(key),
            "put_object",
            Bucket=self.bucket,
            Key=self.full_key(key),
            Body=data,
            Metadata=meta,
            **extra,
        )
        return StoredObject(key=key, size=len(data), metadata=meta, etag=resp.get("ETag", "").strip('"'))

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        metadata: dict[str, str] | None = None,
        content_type: str | None = None,
        expected_size: int | None = None,
    ) -> StoredObject:
        hashing = _Hashing(chunks)
        parts = _rechunk(hashing, self.part_size)
        buffered: list[bytes] = []
        total = 0
        for piece in parts:
            buffered.append(piece)
            total += len(piece)
            if total > self.multipart_threshold:
                return self._multipart(key, buffered, parts, hashing, metadata, content_type, expected_size)
        # The whole stream fit below the threshold: one PutObject.
        _check_size(key, hashing.size, expected_size)
        return self.put_bytes(key, b"".join(buffered), metadata, content_type)

    def _temp_key(self, key: str) -> str:
        """A bucket key for a private upload next to `key`: same directory, so the same IAM prefix."""
        directory = key.rpartition("/")[0]
        return self.prefix + (directory + "/" if directory else "") + f"{TMP_SEGMENT}/{_tmp_name()}"

    def _multipart(
        self,
        key: str,
        head_parts: list[bytes],
        parts: Iterator[bytes],
        hashing: _Hashing,
        metadata: dict[str, str] | None,
        content_type: str | None,
        expected_size: int | None,
    ) -> StoredObject:
        full_key, temp = self.full_key(key), self._temp_key(key)
        where = f"{self.location(key)} (via s3://{self.bucket}/{temp})"
        upload_id = self._call(
            "start upload of", where, "create_multipart_upload", Bucket=self.bucket, Key=temp
        )["UploadId"]
        etags: dict[int, str] = {}

        def upload(number: int, body: bytes) -> None:
            resp = self._call(
                f"upload part {number} of",
                where,
                "upload_part",
                Bucket=self.bucket,
                Key=temp,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
            )
            etags[number] = resp["ETag"]

        try:
            # Parts go up concurrently while the next ones are read; at most `part_concurrency`
            # parts are in flight, so memory stays bounded whatever the object's size.
            with ThreadPoolExecutor(max_workers=self.part_concurrency) as pool:
                pending: set[Future[None]] = set()
                for number, body in enumerate(_chain(head_parts, parts), start=1):
                    if len(pending) >= self.part_concurrency:
                        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in finished:
                            fut.result()
                    pending.add(pool.submit(upload, number, body))
                for fut in pending:
                    fut.result()
            _check_size(key, hashing.size, expected_size)
            done = [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]
            self._call(
                "complete upload of",
                where,
                "complete_multipart_upload",
                Bucket=self.bucket,
                Key=temp,
                UploadId=upload_id,
                MultipartUpload={"Parts": done},
            )
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=temp, UploadId=upload_id)
            raise
        meta = _clean_metadata(metadata)
        meta.update(hashing.integrity())
        try:
            etag = self._publish_copy(temp, full_key, hashing.size, meta, content_type, where)
        finally:
            # Best effort: a temp object left here is removed by a later sync's `cleanup_stale`.
            with contextlib.suppress(Exception):
                self.client.delete_object(Bucket=self.bucket, Key=temp)
        return StoredObject(key=key, size=hashing.size, metadata=meta, etag=etag)

    def _publish_copy(
        self, temp: str, full_key: str, size: int, meta: dict[str, str], content_type: str | None, where: str
    ) -> str | None:
        """Copy the completed temp object onto the final key with its metadata, in one request
        (a multipart copy above 5 GiB, whose completion is just as atomic)."""
        from botocore.exceptions import BotoCoreError, ClientError

        args: dict[str, Any] = {"MetadataDirective": "REPLACE", "Metadata": meta}
        if content_type:
            args["ContentType"] = content_type
        source = {"Bucket": self.bucket, "Key": temp}
        if size <= S3_MAX_COPY:
            resp = self._call(
                "publish", where, "copy_object", Bucket=self.bucket, Key=full_key, CopySource=source, **args
            )
            return resp.get("CopyObjectResult", {}).get("ETag", "").strip('"') or None
        try:
            self.client.copy(source, self.bucket, full_key, ExtraArgs=args)
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(describe_s3_error("publish", where, exc)) from exc
        return None

    def delete(self, key: str) -> None:
        self._call("delete", self.location(key), "delete_object", Bucket=self.bucket, Key=self.full_key(key))

    def lease(
        self,
        prefix: str,
        ttl: float,
        *,
        owner: str | None = None,
        wait_seconds: float = 10.0,
        hold: bool = True,
    ) -> Lease:
        """An exclusive lease on `prefix` (see `Lease`), held at `<prefix>.quest-lease.json`."""
        slot = _S3LeaseSlot(self, self.prefix + _check_prefix(prefix) + LEASE_NAME)
        return Lease(slot, ttl, owner=owner, wait_seconds=wait_seconds, hold=hold)

    def cleanup_stale(self, prefix: str, older_than_seconds: float, now: float | None = None) -> list[str]:
        """Abort multipart uploads and delete temp objects under `prefix` older than the grace period.

        Age is taken from the start time in our temp names when there is one (the later of that and
        S3's own), so an upload a sync elsewhere is still streaming is never touched.
        """
        now = time.time() if now is None else now
        full_prefix = self.prefix + _check_prefix(prefix)
        where = f"s3://{self.bucket}/{full_prefix}"
        removed = []
        for page in self._pages("list uploads in", where, "list_multipart_uploads", Prefix=full_prefix):
            for upload in page.get("Uploads", []):
                started = _started(upload["Key"], upload.get("Initiated"))
                if now - started > older_than_seconds:
                    self._call(
                        "abort upload",
                        f"s3://{self.bucket}/{upload['Key']}",
                        "abort_multipart_upload",
                        Bucket=self.bucket,
                        Key=upload["Key"],
                        UploadId=upload["UploadId"],
                    )
                    removed.append(
                        f"multipart upload s3://{self.bucket}/{upload['Key']} (started {_iso(started)})"
                    )
        for page in self._pages("list", where, "list_objects_v2", Prefix=full_prefix):
            for item in page.get("Contents", []):
                if f"/{TMP_SEGMENT}/" not in "/" + item["Key"]:
                    continue
                started = _started(item["Key"], item.get("LastModified"))
                if now - started > older_than_seconds:
                    location = f"s3://{self.bucket}/{item['Key']}"
                    self._call("delete", location, "delete_object", Bucket=self.bucket, Key=item["Key"])
                    removed.append(f"temp object {location} (written {_iso(started)})")
        return removed


def _started(bucket_key: str, reported: datetime | None) -> float:
    """When an upload/temp object began: the later of S3's time and the one in our temp name."""
    times = [reported.timestamp()] if reported is not None else []
    stamped = _tmp_started(bucket_key.rpartition("/")[2])
    if stamped is not None:
        times.append(stamped)
    return max(times) if times else 0.0


class _S3LeaseSlot:
    """A lease object updated by conditional writes: If-None-Match to create, If-Match to replace."""

    def __init__(self, store: S3Store, bucket_key: str):
        self.store, self.key = store, bucket_key
        self.where = f"s3://{store.bucket}/{bucket_key}"

    def read(self) -> tuple[dict[str, Any], str] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self.store.client.get_object(Bucket=self.store.bucket, Key=self.key)
            body = resp["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise StoreError(describe_s3_error("read lease", self.where, exc)) from exc
        version = resp["ETag"]
        with contextlib.suppress(ValueError):
            record = json.loads(body)
            if isinstance(record, dict):
                return record, version
        return {}, version  # unreadable: treated as expired, so it can be taken over

    def _put(self, record: dict[str, Any], **condition: str) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self.store.client.put_object(
                Bucket=self.store.bucket,
                Key=self.key,
                Body=json.dumps(record, sort_keys=True).encode(),
                ContentType="application/json",
                **condition,
            )
        except (ClientError, BotoCoreError) as exc:
            if _error_code(exc) in _PRECONDITION_CODES | {"NoSuchKey"}:
                return None
            raise StoreError(describe_s3_error("write lease", self.where, exc)) from exc
        return str(resp["ETag"])

    def create(self, record: dict[str, Any]) -> str | None:
        return self._put(record, IfNoneMatch="*")

    def replace(self, record: dict[str, Any], version: str) -> str | None:
        return self._put(record, IfMatch=version)


def _rechunk(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Regroup arbitrary chunks into pieces of exactly `size` bytes (the last may be shorter).

    Chunks are held in a list and joined once per piece: growing and slicing one bytearray copied
    every byte three or four times, which cost as much CPU as the upload itself.
    """
    held: list[bytes] = []
    count = 0
    for chunk in chunks:
        held.append(chunk)
        count += len(chunk)
        if count < size:
            continue
        data = b"".join(held)
        whole = len(data) - len(data) % size
        for start in range(0, whole, size):
            yield data[start : start + size]  # the object itself when it is exactly one piece
        held = [data[whole:]] if whole < len(data) else []
        count = len(data) - whole
    if count:
        yield b"".join(held)


def _chain(first: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    yield from first
    yield from rest


def make_s3_client(max_pool_connections: int = 16, session: Any = None) -> Any:
    """An S3 client with standard retries and a connection pool sized for the transfers."""
    from flows.io.aws import aws_client

    return aws_client(
        "s3",
        session=session,
        retries={"mode": "standard", "max_attempts": 5},
        max_pool_connections=max_pool_connections,
    )


def parse_store_url(url: str) -> tuple[str, str] | None:
    """(bucket, prefix) for `s3://bucket[/prefix]`, else None (a local directory)."""
    if not url.startswith("s3://"):
        return None
    rest = url[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise StoreError(f"store URL {url!r} names no bucket")
    return bucket, prefix


def open_store(
    url: str,
    *,
    client: Any = None,
    multipart_threshold: int | None = None,
    part_size: int | None = None,
    max_pool_connections: int = 16,
) -> ObjectStore:
    """The store for QUEST_STORE: `s3://bucket[/prefix]` or a directory path."""
    parsed = parse_store_url(url)
    if parsed is None:
        return LocalStore(url)
    bucket, prefix = parsed
    kwargs: dict[str, Any] = {}
    if multipart_threshold:
        kwargs["multipart_threshold"] = multipart_threshold
    if part_size:
        kwargs["part_size"] = part_size
    return S3Store(bucket, prefix, client=client or make_s3_client(max_pool_connections), **kwargs)


def store_from_settings(settings: Any, client: Any = None) -> ObjectStore:
    return open_store(
        settings.store,
        client=client,
        multipart_threshold=settings.multipart_threshold_bytes,
        part_size=settings.multipart_chunk_bytes,
        max_pool_connections=max(16, settings.concurrency * 2),
    )
