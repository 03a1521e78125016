"""The object store: S3 (boto3) or a local directory, behind one small interface.

Both backends keep the same promises, and the same tests run against both:
- keys are `/`-separated and relative to the store root (`s3://bucket/prefix` or a directory);
- a write is atomic: readers see the old object or the complete new one, never a partial one;
- `put_stream` never holds a whole object in memory, counts and hashes what it writes, and
  refuses to publish when the byte count differs from what the caller expected;
- each object carries string metadata (lower-case names), including the `sha256` of its bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from flows.errors import QuestError

META_SHA256 = "sha256"
META_SOURCE_URL = "source-url"
META_UPSTREAM_LAST_MODIFIED = "upstream-last-modified"
META_UPSTREAM_SIZE = "upstream-size"

S3_MIN_PART = 5 * 1024 * 1024
S3_MAX_COPY = 5 * 1024**3


class StoreError(QuestError):
    """A store operation failed; the message names the object."""


class SizeMismatch(StoreError):
    """The stream ended with a different byte count than expected; nothing was published."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    metadata: dict[str, str] = field(default_factory=dict)
    etag: str | None = None
    last_modified: datetime | None = None


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


def stat_prefix(store: ObjectStore, prefix: str, workers: int = 8) -> dict[str, StoredObject]:
    """Every object under `prefix` with its metadata.

    S3 lists no user metadata, so this is one HEAD per object: they run `workers` at a time, or a
    survey of a few hundred files would spend seconds on round trips before planning anything.
    """
    keys = store.list_keys(prefix)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(keys) or 1))) as pool:
        heads = pool.map(store.head, keys)
        return {key: obj for key, obj in zip(keys, heads, strict=True) if obj is not None}


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"invalid object key {key!r}")
    if any(ord(c) < 32 for c in key):
        raise StoreError(f"invalid object key {key!r}")
    return key


def _clean_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (metadata or {}).items()}


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


def _check_size(key: str, actual: int, expected: int | None) -> None:
    if expected is not None and actual != expected:
        raise SizeMismatch(f"{key}: received {actual} bytes, expected {expected}; not published")


# --------------------------------------------------------------------------- local directory


class LocalStore:
    """A directory. Metadata lives in a parallel hidden tree; writes go through temp file + rename."""

    META_DIR = ".quest-meta"
    TMP_DIR = ".quest-tmp"

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
        return tmp / uuid.uuid4().hex

    def list_keys(self, prefix: str = "") -> list[str]:
        if not self.root.exists():
            return []
        keys = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            if Path(dirpath) == self.root:
                dirnames[:] = [d for d in dirnames if d not in (self.META_DIR, self.TMP_DIR)]
            for name in filenames:
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
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
            metadata = json.loads(self._meta_path(key).read_text())
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
        final = self._path(key)
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
            meta[META_SHA256] = hashing.sha256
            tmp_meta.write_text(json.dumps(meta, sort_keys=True))
            final.parent.mkdir(parents=True, exist_ok=True)
            self._meta_path(key).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_data, final)
            os.replace(tmp_meta, self._meta_path(key))
        finally:
            for leftover in (tmp_data, tmp_meta):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
        return StoredObject(key=key, size=hashing.size, metadata=meta, etag=meta[META_SHA256])

    def delete(self, key: str) -> None:
        for path in (self._path(key), self._meta_path(key)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


# --------------------------------------------------------------------------- S3


class S3Store:
    """A bucket (optionally a prefix in it), through boto3.

    Small objects go up in one PutObject. Larger ones stream as a multipart upload that is only
    completed once every byte has arrived and the count is right (aborted otherwise), so the final
    key never shows a partial object; the sha256 is then written into the metadata by a
    server-side copy, since S3 fixes metadata before the bytes are known.
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

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_s3_client()
        return self._client

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.full_key(key)}"

    def full_key(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def relative_key(self, full_key: str) -> str | None:
        """The store key for a bucket key, or None when it lies outside this store's prefix."""
        if not full_key.startswith(self.prefix):
            return None
        return full_key[len(self.prefix) :]

    def list_keys(self, prefix: str = "") -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        keys = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for item in page.get("Contents", []):
                keys.append(item["Key"][len(self.prefix) :])
        return sorted(keys)

    def head(self, key: str) -> StoredObject | None:
        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=self.full_key(key))
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return StoredObject(
            key=key,
            size=int(resp["ContentLength"]),
            metadata=_clean_metadata(resp.get("Metadata")),
            etag=resp.get("ETag", "").strip('"') or None,
            last_modified=resp.get("LastModified"),
        )

    def read_bytes(self, key: str) -> bytes:
        with self.open_read(key) as body:
            return body.read()

    def open_read(self, key: str) -> IO[bytes]:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self.full_key(key))
        except self.client.exceptions.NoSuchKey as exc:
            raise StoreError(f"no object {self.location(key)}") from exc
        return resp["Body"]

    def put_bytes(
        self, key: str, data: bytes, metadata: dict[str, str] | None = None, content_type: str | None = None
    ) -> StoredObject:
        meta = _clean_metadata(metadata)
        meta[META_SHA256] = hashlib.sha256(data).hexdigest()
        extra = {"ContentType": content_type} if content_type else {}
        resp = self.client.put_object(
            Bucket=self.bucket, Key=self.full_key(key), Body=data, Metadata=meta, **extra
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
        full_key = self.full_key(key)
        meta = _clean_metadata(metadata)
        extra = {"ContentType": content_type} if content_type else {}
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=full_key, Metadata=meta, **extra)
        upload_id = upload["UploadId"]
        etags: dict[int, str] = {}

        def upload(number: int, body: bytes) -> None:
            resp = self.client.upload_part(
                Bucket=self.bucket, Key=full_key, UploadId=upload_id, PartNumber=number, Body=body
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
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=full_key, UploadId=upload_id, MultipartUpload={"Parts": done}
            )
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=full_key, UploadId=upload_id)
            raise
        meta[META_SHA256] = hashing.sha256
        copy_args = {"MetadataDirective": "REPLACE", "Metadata": meta, **extra}
        source = {"Bucket": self.bucket, "Key": full_key}
        if hashing.size <= S3_MAX_COPY:
            resp = self.client.copy_object(Bucket=self.bucket, Key=full_key, CopySource=source, **copy_args)
            etag = resp.get("CopyObjectResult", {}).get("ETag", "").strip('"')
        else:
            self.client.copy(source, self.bucket, full_key, ExtraArgs=copy_args)
            etag = None
        return StoredObject(key=key, size=hashing.size, metadata=meta, etag=etag)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.full_key(key))


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
    """A boto3 S3 client honouring boto3's own settings (AWS_ENDPOINT_URL, AWS_REGION, credentials)."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=max_pool_connections
    )
    return (session or boto3.session.Session()).client("s3", config=config)


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
