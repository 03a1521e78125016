"""The local-directory store: temp file + rename, a fingerprinted metadata sidecar, a flock."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from flows.core import state_json
from flows.core.errors import GarbledState, StoreError
from flows.core.objects import META_SHA256, StoredObject
from flows.io.store.base import (
    INTERNAL_MARK,
    LEASE_NAME,
    TMP_SEGMENT,
    _check_key,
    _check_prefix,
    _check_size,
    _clean_metadata,
    _Hashing,
    _tmp_name,
    head_each,
    is_internal_key,
    read_only_refusal,
)
from flows.io.store.lease import Lease, LeaseRead, lease_read

_log = logging.getLogger(__name__)


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


def _sidecar_metadata(data: bytes, fingerprint: _Fingerprint, where: str = "sidecar") -> dict[str, str]:
    """The sidecar's metadata when it describes exactly this data file, else nothing.

    The data file and its sidecar are replaced by two renames: a crash between them, an old-format
    sidecar or an edit of the file leaves a sidecar about other bytes, which must not be believed.
    A garbled one (`flows.core.state_json`) is logged and believed no more than a missing one.
    """
    try:
        doc = state_json.read_object(data, state_json.MAX_SIDECAR_BYTES, "metadata sidecar")
    except GarbledState as exc:
        _log.warning("%s: %s; read as no metadata", where, exc)
        return {}
    if doc.get("file") != fingerprint.__dict__:
        return {}
    metadata = doc.get("metadata")
    return {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}


def _read_capped(path: Path, max_bytes: int) -> bytes:
    """At most `max_bytes` + 1 bytes of a state file (a longer one is garbled whatever follows)."""
    with path.open("rb") as fh:
        return fh.read(max_bytes + 1)


class LocalStore:
    """A directory. Metadata lives in a parallel hidden tree; writes go through temp file + rename.

    The data and sidecar renames happen under one store-wide `flock`, so concurrent writers of a key
    publish as pairs; the sidecar also fingerprints its data file, so a pair broken by a crash is
    detected by `head` (metadata missing) rather than trusted.
    """

    META_DIR = ".quest-meta"
    TMP_DIR = TMP_SEGMENT

    def __init__(self, root: str | os.PathLike[str], read_only: bool = False):
        self.root = Path(root).resolve()
        self.url = str(self.root)
        self.read_only = read_only  # a dry run's or a check's: every write refused

    def _writable(self, action: str, where: str) -> None:
        if self.read_only:
            raise StoreError(read_only_refusal(action, where))

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

    def list_prefixes(self, prefix: str = "") -> list[str]:
        """The folders directly under `prefix` ('' or ending in '/') holding at least one file, as
        `prefix + name + '/'`, sorted; the store's own folders are left out. Like S3's delimiter
        listing, a folder counts whatever files it holds (a lease record too)."""
        directory = self.root / _check_prefix(prefix) if prefix else self.root
        if not directory.is_dir():
            return []
        found = []
        for child in directory.iterdir():
            if child.name.startswith(INTERNAL_MARK) or not child.is_dir() or child.is_symlink():
                continue
            if any(files for _, _, files in os.walk(child)):
                found.append(f"{prefix}{child.name}/")
        return sorted(found)

    def head(self, key: str) -> StoredObject | None:
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        if not path.is_file():
            return None
        try:
            meta_path = self._meta_path(key)
            metadata = _sidecar_metadata(
                _read_capped(meta_path, state_json.MAX_SIDECAR_BYTES), _Fingerprint.of(st), str(meta_path)
            )
        except FileNotFoundError:
            metadata = {}
        return StoredObject(
            key=key,
            size=st.st_size,
            metadata=metadata,
            etag=metadata.get(META_SHA256),
            last_modified=datetime.fromtimestamp(st.st_mtime, UTC),
        )

    def stat_prefix(self, prefix: str, workers: int = 8) -> dict[str, StoredObject]:
        """A stat per file: local reads are cheap enough to need no cache."""
        return head_each(self, self.list_keys(prefix), workers)

    def refresh_stat_cache(self, prefix: str, workers: int = 8) -> None:
        """Nothing to refresh: see `stat_prefix`."""

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
        self._writable("put", str(final))
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
        self._writable("delete", str(paths[0]))
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
        if hold:
            self._writable("lease", slot.where)
        return Lease(slot, ttl, owner=owner, wait_seconds=wait_seconds, hold=hold)

    def cleanup_stale(self, prefix: str, older_than_seconds: float, now: float | None = None) -> list[str]:
        """Remove temp files older than the grace period (they are store-wide, whatever the prefix)."""
        _check_prefix(prefix)
        self._writable("clean up", str(self.root / self.TMP_DIR))
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
        """The record's text, the version its compare-and-swap compares (garbled bytes included:
        decoded with replacement, so a foreign file still has a version to replace)."""
        try:
            return _read_capped(self.path, state_json.MAX_LEASE_BYTES).decode("utf-8", "replace")
        except FileNotFoundError:
            return None

    def _write(self, record: dict[str, Any]) -> str:
        text = json.dumps(record, sort_keys=True)
        tmp = self.store._tmp_path()
        tmp.write_text(text)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, self.path)
        return text

    def read(self) -> LeaseRead | None:
        with self.store._locked():
            try:
                data = _read_capped(self.path, state_json.MAX_LEASE_BYTES)
                written_at: float | None = self.path.stat().st_mtime
            except FileNotFoundError:
                return None
        return lease_read(data, data.decode("utf-8", "replace"), written_at)

    def create(self, record: dict[str, Any]) -> str | None:
        with self.store._locked():
            return None if self.path.exists() else self._write(record)

    def replace(self, record: dict[str, Any], version: str) -> str | None:
        with self.store._locked():
            return self._write(record) if self._text() == version else None
